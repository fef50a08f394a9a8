"""Aether API gateway: the public entry (REST), JWT check, per-plan rate limits, gRPC routing."""
