"""The tiny random Llama that trains in seconds and that vLLM serves on a CPU: the `tiny` benchmark
suites start from it, and the tests teach it facts of their own."""

from __future__ import annotations


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer Llama (hidden 128, head dim 64 so vLLM's CPU attention serves it) on `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)
