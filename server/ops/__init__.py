"""Running it: Prometheus metrics, the request-size limit."""
