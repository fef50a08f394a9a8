"""The alerts service: rules on live market data, their firings and the in-app inbox."""
