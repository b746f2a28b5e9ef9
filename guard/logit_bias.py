"""The guard's first step as an OpenAI `logit_bias`, for an upstream that runs none of our code.

`logit_bias` is static: one bias per token for the whole answer. What fits that is the matcher's
bias at a word start: tokens that would complete a forbidden span outright (-100, as good as
blocked) and the entry tokens of longer spans, penalised by how much of the span they cover (the
guard's adaptive penalty). APIs cap the map (OpenAI: 300 entries, values in [-100, 100]), so the
strongest entries are kept. The output filter catches whatever gets past.
"""

from __future__ import annotations

from cachetools import LRUCache

from guard.matcher import INITIAL_STATE, Matcher
from guard.spec import GuardSpec
from guard.vocab import TokenIndex

LOGIT_BIAS_MIN = -100.0


class LogitBiases:
    def __init__(self, tokenizer, max_entries: int = 300):
        self.index = TokenIndex.from_tokenizer(tokenizer)
        self.max_entries = max_entries
        self._cached: LRUCache[tuple, dict[str, float]] = LRUCache(256)

    def for_spec(self, spec: GuardSpec, strongest: bool = False) -> dict[str, float]:
        """{token id (as a string, as the API wants it): bias}; `strongest`: every entry at -100."""
        key = (spec.compile_key, strongest)
        cached = self._cached.get(key)
        if cached is None:
            cached = self._cached[key] = self._compute(spec, strongest)
        return cached

    def _compute(self, spec: GuardSpec, strongest: bool) -> dict[str, float]:
        bias = Matcher.for_spec(spec, self.index).bias(INITIAL_STATE)
        entries = sorted(zip(bias.token_ids, bias.values), key=lambda entry: (entry[1], entry[0]))
        return {str(token_id): LOGIT_BIAS_MIN if strongest else max(LOGIT_BIAS_MIN, round(value, 2))
                for token_id, value in entries[:self.max_entries]}
