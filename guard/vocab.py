"""A tokenizer's vocabulary in folded form, indexed so a matcher never loops over it.

Built once per tokenizer (in the engine's worker process). Every lookup a matcher needs,
"tokens whose folded text starts with s" and "tokens whose folded text is exactly s", is a bisect
or a dict lookup, for three views of a token:
  whole:    its folded text, for extending a partial match already under way;
  leading:  tokens that begin with a separator (" Rowling"): they start a word wherever they go;
  bare:     tokens that begin with a letter ("Rowling"): they start a word only after a separator;
  inner:    the folded text from each word start inside a token (".K" -> "k", "J.K" -> "k").
And, scanned once per word and cached, the tokens holding a word anywhere inside one of theirs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Iterable, Sequence

from cachetools import LRUCache

from guard.folding import FoldedPiece, fold_piece

_SEPARATOR = fold_piece(" ")


class _KeyIndex:
    def __init__(self, entries: Iterable[tuple[str, int]]):
        pairs = sorted(entries)
        self._keys = [k for k, _ in pairs]
        self._ids = [i for _, i in pairs]
        self._exact: dict[str, list[int]] = defaultdict(list)
        for key, token_id in pairs:
            self._exact[key].append(token_id)

    def with_prefix(self, prefix: str) -> list[int]:
        lo = bisect_left(self._keys, prefix)
        hi = bisect_left(self._keys, prefix + "\U0010ffff", lo)
        return self._ids[lo:hi]

    def equal(self, key: str) -> list[int]:
        return self._exact.get(key, [])


class TokenIndex:
    def __init__(self, token_texts: Sequence[str], special_ids: Iterable[int] = ()):
        special = set(special_ids)
        # Special tokens (<|im_end|>) end the text: they act as separators, never as letters.
        self.pieces: list[FoldedPiece] = [
            _SEPARATOR if i in special else fold_piece(text) for i, text in enumerate(token_texts)
        ]
        letters = [(p.folded, i) for i, p in enumerate(self.pieces) if p.folded]
        self.whole = _KeyIndex(letters)
        self.leading = _KeyIndex((f, i) for f, i in letters if self.pieces[i].leads_with_separator)
        self.bare = _KeyIndex((f, i) for f, i in letters if not self.pieces[i].leads_with_separator)
        self.inner = _KeyIndex(
            (p.folded[j:], i) for i, p in enumerate(self.pieces) for j in p.word_starts if j > 0
        )
        self._starts: LRUCache[tuple[str, bool], tuple[frozenset[int], dict[int, float]]] = LRUCache(16384)
        self._holding: LRUCache[str, frozenset[int]] = LRUCache(16384)

    def pattern_starts(self, pattern: str, boundary: bool) -> tuple[frozenset[int], dict[int, float]]:
        """Tokens that would begin `pattern` at a word start: (those completing it, {token: depth
        fraction} for those beginning it). With boundary=True, the next letter starts a word anyway.
        Cached per pattern: requests share their targets' patterns, so new matchers compile fast."""
        key = (pattern, boundary)
        cached = self._starts.get(key)
        if cached is None:
            views = [self.leading, self.inner] + ([self.bare] if boundary else [])
            blocked = frozenset(t for view in views for t in view.with_prefix(pattern))
            depth: dict[int, float] = {}
            for k in range(1, len(pattern)):
                for view in views:
                    for token_id in view.equal(pattern[:k]):
                        depth[token_id] = k / len(pattern)  # k grows: the deepest reach wins
            cached = self._starts[key] = (blocked, depth)
        return cached

    def holding(self, word: str) -> frozenset[int]:
        """Tokens one of whose words holds folded `word` whole, anywhere in it. Cached per word."""
        cached = self._holding.get(word)
        if cached is None:
            cached = self._holding[word] = frozenset(
                i for i, p in enumerate(self.pieces) if word in p.folded and any(word in w for w in p.words()))
        return cached

    def __len__(self) -> int:
        return len(self.pieces)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenIndex":
        """From a Hugging Face tokenizer: each id decoded alone, as it appears in output text."""
        size = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0))
        texts = [tokenizer.decode([i]) for i in range(size)]
        return cls(texts, special_ids=tokenizer.all_special_ids)
