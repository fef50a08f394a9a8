"""Aether chat service."""
