"""`/api/alerts/*` and `/api/notifications/*`: alert rules and the inbox over alerts'
AlertsService (gRPC); docs/alerts.md."""
