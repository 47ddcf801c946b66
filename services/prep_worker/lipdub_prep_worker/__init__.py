"""Celery worker for the prep queue: probe and source preparation (CPU)."""
