"""Aether AI service: LLM chat in modes, RAG, response cache, bounded queue, streaming, usage."""
