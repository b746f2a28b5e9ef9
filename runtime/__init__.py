"""What a running guard is built from: the prepared model files (runtime.models) and the
restrictions a policy compiles to (runtime.restrictions). Serve, proxy, unlearning and the
benchmarks all build on it; it builds on the core (guard) and the prompt classifier (classifiers)."""
