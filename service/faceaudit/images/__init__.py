"""Image decoding and the conversion of images to model input."""
