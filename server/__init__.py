"""The OpenAI-compatible HTTP server: protocol models, routes, the embedded engine."""
