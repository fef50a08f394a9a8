"""Aether worker service: the platform's one job system (docs/worker.md)."""
