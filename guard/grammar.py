"""Structured output that survives a rewind: a JSON grammar (xgrammar, vLLM's own backend) over token ids.

vLLM's structured outputs keep the grammar's state inside the engine, from the first generated token;
a rewind resubmits the prompt plus the accepted output, where that state would start again from
nothing and reject the rest of the document. So a guarded request carries its JSON schema in its
spec, and the guard's logits processor keeps the grammar itself: a matcher advanced through the
accepted tokens a rewind replays, then through each new token, masking every token the grammar
does not allow before the guard's own biases. The grammar is compiled as vLLM compiles it (any
whitespace; `{"type": "object"}` for a JSON object), so an answer the guard leaves alone is vLLM's.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import torch
from cachetools import LRUCache

ANY_OBJECT = '{"type": "object"}'  # response_format json_object, as vLLM compiles it
_CACHE = 32


@lru_cache(maxsize=256)  # a request's spec is checked in the API process and the worker, at every attempt
def check_schema(schema: str) -> None:
    """ValueError (its message names what is wrong) unless `schema` is a JSON schema xgrammar compiles."""
    import xgrammar

    try:
        xgrammar.Grammar.from_json_schema(schema)
    except Exception as exc:  # noqa: BLE001 - xgrammar raises several kinds
        reason = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(exc).splitlines()[0])  # its log prefix
        raise ValueError(f"a JSON schema the grammar cannot be built from: {reason}") from None


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


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
