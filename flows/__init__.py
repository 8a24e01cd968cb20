"""Prefect flows: which steps run, in which order. Deployment entrypoints live here."""
