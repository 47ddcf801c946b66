"""Stage functions over local files. Celery tasks and the embedded pipeline only call these."""
