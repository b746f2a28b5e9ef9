"""The model's prompt format: a conversation rendered by its chat template, as token ids."""

from __future__ import annotations


def render_chat(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """A conversation (and the tools it may call) as the model's prompt token ids: its chat template,
    ready for an answer."""
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)
