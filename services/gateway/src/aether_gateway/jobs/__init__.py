"""`/api/jobs/*` (and the documents' root `/generate`, `/jobs/{id}`): the worker's jobs over its
WorkerService (gRPC); docs/jobs-api.md."""
