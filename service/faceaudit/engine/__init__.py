"""Running models: onnxruntime sessions, batch preparation, and the streaming scorer."""
