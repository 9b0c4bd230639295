"""Faithfulness metrics and evaluation games over saliency maps (hiding game, deletion/insertion, ...)."""
