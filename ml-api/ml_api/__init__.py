"""The HTTP API: accepts uploads, enqueues detections and serves their results."""
