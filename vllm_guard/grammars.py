"""The JSON grammar inside the engine: compiled xgrammar grammars for one tokenizer, a matcher per
answer advanced through the tokens a rewind replays, and the mask of every token it does not allow
(guard.grammar says why the grammar travels in the guard's spec rather than in vLLM's structured outputs)."""

from __future__ import annotations

import torch
from cachetools import LRUCache

_CACHE = 32


class Grammars:
    """Compiled JSON grammars for one tokenizer, by schema; matchers to follow one answer each."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar

        self._compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer,
                                                                                          vocab_size=vocab_size))
        self._compiled: LRUCache[str, object] = LRUCache(_CACHE)
        self.vocab_size = vocab_size

    def matcher(self, schema: str, accepted: list[int]):
        """A matcher for `schema`, advanced through `accepted`; ValueError if the grammar rejects one."""
        import xgrammar

        compiled = self._compiled.get(schema)
        if compiled is None:
            compiled = self._compiled[schema] = self._compiler.compile_json_schema(schema, any_whitespace=True)
        matcher = xgrammar.GrammarMatcher(compiled)
        advance(matcher, accepted)
        return matcher

    def mask(self, logits: torch.Tensor, rows: list[int], matchers: list) -> None:
        """Every token the grammar does not allow next, at each of `rows`, to -inf (in place)."""
        import xgrammar

        bitmask = xgrammar.allocate_token_bitmask(len(rows), self.vocab_size)
        for i, matcher in enumerate(matchers):
            matcher.fill_next_token_bitmask(bitmask, i)
        selected = logits[rows]
        xgrammar.apply_token_bitmask_inplace(selected, bitmask, vocab_size=min(self.vocab_size, logits.shape[1]))
        logits[rows] = selected


def advance(matcher, token_ids: list[int]) -> None:
    """Advance `matcher` through `token_ids` (none after it terminated); ValueError at the first it rejects."""
    for token_id in token_ids:
        if matcher.is_terminated():
            return
        if not matcher.accept_token(token_id):
            raise ValueError(f"the grammar rejects token {token_id}")
