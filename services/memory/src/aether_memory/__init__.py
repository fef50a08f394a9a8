"""Aether memory service: embeddings, collections per namespace, semantic search."""
