"""Celery worker for the audio queue: dub-audio analysis (CPU)."""
