"""Generated gRPC code of proto/faceaudit/v1 (python -m faceaudit.server.codegen); do not edit."""
