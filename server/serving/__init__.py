"""Serving a completion request: the interface the one router holds (server.serving.base) and its two
implementations, bound at start-up, neither importing the other: token-level guarded generation over
an engine (server.serving.generate) and the relay with its output filter (server.serving.relay)."""
