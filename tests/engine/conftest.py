"""The engine tier: torch, vLLM and classifier training: the real tokenizer, the real encoder, real engines in-process, fakes for servers."""
