"""Aether charts service: OHLCV history, bundled datasets, candles at any interval."""
