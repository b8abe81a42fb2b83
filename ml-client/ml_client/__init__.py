"""The mlprod web client: sign in, upload images, watch their detections arrive."""
