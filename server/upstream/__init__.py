"""`guard proxy`'s upstreams: the pooled HTTP client, the start-up probe that picks the enforcement
level, and a `vllm serve` upstream running the guard's logits processor as an engine."""
