"""The Celery worker: runs the detector on uploaded images."""
