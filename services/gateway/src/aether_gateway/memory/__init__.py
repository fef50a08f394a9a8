"""`/api/memory/*`: records and semantic search over memory's MemoryService (gRPC); docs/ai.md."""
