"""cachify for Taskiq: see integrations/taskiq/README.md."""
