"""keymeta Celery adapter: the app, queues and routes, beat schedule, and thin task wrappers."""
