"""cachify for Celery: see integrations/celery/README.md."""
