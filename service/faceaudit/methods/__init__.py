"""Explanation methods, one file each (occlusion.py, rise.py, ebp.py, ...), all returning a SaliencyMap.

Black-box methods score perturbations through `faceaudit.engine.scorer`; white-box methods work on
rewritten graphs. Nothing here imports grpc.
"""
