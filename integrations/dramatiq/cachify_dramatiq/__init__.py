"""cachify for Dramatiq: see integrations/dramatiq/README.md."""
