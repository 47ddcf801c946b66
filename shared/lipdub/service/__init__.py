"""The distributed service: storage, job status, Celery app, auth and the process declarations."""
