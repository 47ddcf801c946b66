"""Celery worker for the webhooks queue: webhook deliveries, job events and batch bookkeeping (I/O only)."""
