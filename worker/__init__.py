"""The worker side: Celery app, thin tasks, the extraction engine."""
