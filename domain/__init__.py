"""keymeta domain: everything that is not an HTTP or Celery adapter."""
