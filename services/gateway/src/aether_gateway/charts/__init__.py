"""`/api/charts/*`: symbols and candles over charts' ChartsService (gRPC)."""
