"""Object detectors: the Detector protocol, NanoDet pre/post-processing and model loading."""
