"""Semantic matching: steer away from words that *mean* a forbidden span, not only spell it.

The tokenizer's word-like tokens (" scientist", " wizard") are embedded once per (tokenizer,
encoder) and cached on disk. For a restriction, each forbidden word is compared with them, and the
tokens closest in meaning get a penalty that grows with the similarity and the classifier's
confidence. The result is a short sparse list of (token id, penalty) that travels in the request's
spec and joins the matcher's cached bias: no per-step cost. Exact spellings are left to the token
matcher; this catches the synonyms and near-synonyms it cannot ("sorcerer" for "wizard").
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from guard.files import cache_key, write_atomically
from guard.folding import fold

Embed = Callable[[list[str]], np.ndarray]  # texts -> [N, D] unit vectors
SIMILARITY_FLOOR = 0.6  # below this a token is not considered close in meaning
MAX_TOKENS_PER_WORD = 8
_WORDLIKE = re.compile(r"^ [A-Za-z]{4,}$")


class SemanticIndex:
    def __init__(self, tokenizer, embed: Embed, encoder_name: str, cache_dir: Path | None = None):
        self._embed = embed
        texts = {i: tokenizer.decode([i]) for i in range(len(tokenizer))}
        self.token_ids = np.array([i for i, t in texts.items() if _WORDLIKE.match(t)], dtype=np.int64)
        self.words = [texts[int(i)].strip() for i in self.token_ids]
        key = cache_key(encoder_name, self.words)
        path = cache_dir / f"vocab-embeddings-{key}.npy" if cache_dir else None
        if path is not None and path.exists():
            self.vectors = np.load(path)
        else:
            chunks = [embed(self.words[i : i + 512]) for i in
                      tqdm(range(0, len(self.words), 512), desc="embedding the vocabulary (once)", unit="batch")]
            self.vectors = np.concatenate(chunks).astype(np.float32)
            if path is not None:
                def save(tmp: Path) -> None:
                    with tmp.open("wb") as file:
                        np.save(file, self.vectors)
                write_atomically(path, save)
        self.similar = lru_cache(maxsize=4096)(self._similar)

    def _similar(self, word: str) -> tuple[tuple[int, float], ...]:
        """Tokens closest in meaning to `word`, not spellings of it: ((token id, similarity), ...)."""
        scores = self.vectors @ self._embed([word])[0]
        folded = fold(word)
        found = []
        for index in np.argsort(-scores)[: 4 * MAX_TOKENS_PER_WORD]:
            other = fold(self.words[index])
            if scores[index] < SIMILARITY_FLOOR or len(found) == MAX_TOKENS_PER_WORD:
                break
            if not (other.startswith(folded[:4]) or folded.startswith(other)):  # spellings: the matcher's job
                found.append((int(self.token_ids[index]), float(scores[index])))
        return tuple(found)

    def penalties(self, spans: list[str], strength: float) -> tuple[tuple[int, float], ...]:
        """Sparse (token id, penalty) for the words of `spans`; strongest penalty per token."""
        penalty: dict[int, float] = {}
        for word in {w for span in spans for w in re.findall(r"[A-Za-z]{4,}", span)}:
            for token_id, similarity in self.similar(word):
                value = -strength * (similarity - SIMILARITY_FLOOR) / (1 - SIMILARITY_FLOOR)
                penalty[token_id] = min(penalty.get(token_id, 0.0), round(value, 3))
        return tuple(sorted(penalty.items()))
