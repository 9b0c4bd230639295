"""Test and demo helpers shipped with faceaudit (small hand-built ONNX models)."""
