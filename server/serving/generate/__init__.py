"""Guarded generation over an engine: `guard serve`, and `guard proxy` at its full level."""
