"""The engines `guard serve` starts: the embedded vLLM engine and its LoRA views, and the variants
(unlearned checkpoints) served beside the base model. What an engine is: server.engine."""
