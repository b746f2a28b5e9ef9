"""The engine adapter: the guard (guard/) plugged into vLLM's V1 logits-processor interface, with the
torch per-step ops it applies. Only this package, of the core and its adapter, imports torch or vLLM.

Register the processor with `logits_processors=["vllm_guard.processor:GuardLogitsProcessor"]`, or
`vllm serve MODEL --logits-processors vllm_guard.processor:GuardLogitsProcessor`."""
