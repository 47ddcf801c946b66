"""Celery worker for the render and mux queues: render chunks, mux, finalize (GPU in production)."""
