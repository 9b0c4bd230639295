"""The `faceaudit` command line."""
