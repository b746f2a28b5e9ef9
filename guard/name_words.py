"""The words of a target's names, as the leak rules read them: which are everyday English words
(`is_common`), which are names wherever they sit inside another word (`embedded_words`), the leading
words of multi-word names and how deep a partial match is doomed (`leading_words`, `doomed_depth`), where
a phrase's words meet (`phrase_gaps`), and which targets own a phrase or word (`phrase_owners`). The
rules themselves are in guard.leaks."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Iterable

from guard.folding import fold, fold_piece
from guard.spec import compile_patterns

NEAR_MISS_DEPTH = 4  # letters of a broken match from which the strict rules judge a near-miss
MIN_FUZZY_WORD = 5  # the shortest word of a name checked for similar words and inside other words
COMMON_ZIPF = 2.0  # wordfreq's Zipf frequency from which a word is everyday English, not a misspelt name


def embedded_words(phrases: Iterable[str]) -> tuple[str, ...]:
    """The folded words of `phrases` (>= MIN_FUZZY_WORD letters), and each multi-word phrase folded whole,
    that are names wherever they appear inside a word: no English word holds one past its first letter
    (wordfreq's list: "einstein" is inside "weinstein", "gandalf" and "isaacnewton" inside nothing)."""
    insides = _english_insides()
    phrases = list(phrases)
    words = {fold(w) for phrase in phrases for w in phrase.split()} | {fold(p) for p in phrases if len(p.split()) > 1}
    return tuple(sorted(w for w in words if len(w) >= MIN_FUZZY_WORD and w not in insides))


@lru_cache(maxsize=1)
def _english_insides() -> str:
    """Every English word of wordfreq's list, folded, less its first letter, one per line: a word of a
    name found in it could be an everyday word's inside."""
    from wordfreq import iter_wordlist

    return "\n".join((w if w.isascii() and w.isalpha() else fold(w))[1:] for w in iter_wordlist("en"))


def phrase_owners(phrases: list[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """(target id, phrase) pairs -> {folded phrase, and each folded word of it long enough for
    near-miss checks: the targets it belongs to}. What a Violation's `forbidden` is looked up in."""
    owners: dict[str, set[str]] = defaultdict(set)
    for target_id, phrase in phrases:
        owners[fold(phrase)].add(target_id)
        for word in phrase.split():
            if len(fold(word)) >= MIN_FUZZY_WORD:
                owners[fold(word)].add(target_id)
    return {key: tuple(sorted(ids)) for key, ids in owners.items()}


@lru_cache(maxsize=65536)
def is_common(word: str) -> bool:
    """Whether `word` is an everyday English word (wordfreq), not a misspelt name."""
    from wordfreq import zipf_frequency

    return zipf_frequency(fold(word), "en") >= COMMON_ZIPF


def leading_words(phrases: Iterable[str]) -> frozenset[str]:
    """Folded prefixes of multi-word phrases that end where one of their words ends, of two letters
    or more ("jk" of "J.K. Rowling", "ron" of "Ron Weasley"): having written one, the model meant the
    name. (One that is a phrase itself, "hermione" of "Hermione Granger", is matched whole.)"""
    phrases = list(phrases)
    patterns = set(compile_patterns(phrases))
    return frozenset(lead for phrase in phrases for lead in _leading_word_prefixes(phrase)
                     if len(lead) >= 2 and lead not in patterns)


def phrase_gaps(phrases: list[str], prefixes: set[str]) -> dict[str, frozenset[int]]:
    """For each pattern prefix: the lengths at which a phrase it begins has a gap between words
    ("jkrowling": 1 and 2, of "J.K. Rowling"), where a space or digits may stand in the text."""
    gaps: dict[str, set[int]] = {prefix: set() for prefix in prefixes}
    for phrase in phrases:
        piece = fold_piece(phrase)
        for k in range(1, len(piece.folded) + 1):
            if piece.folded[:k] in gaps:
                gaps[piece.folded[:k]].update(piece.word_starts)
    return {prefix: frozenset(found) for prefix, found in gaps.items()}


def doomed_depth(pattern: str, leading: frozenset[str] | tuple[str, ...]) -> int | None:
    """How many letters of `pattern`, written from a word start, the strict rules judge a near-miss
    whatever follows: NEAR_MISS_DEPTH, or fewer where they cover a leading word. None where only the
    whole pattern counts (it is no longer than that). The engine's matcher blocks a partial match
    from there on, so the strict rules have nothing left to rewind."""
    depth = min([NEAR_MISS_DEPTH] + [len(lead) for lead in leading if pattern.startswith(lead)])
    return depth if depth < len(pattern) else None


def _leading_word_prefixes(phrase: str) -> list[str]:
    """"J.K. Rowling" -> ["j", "jk"]: the folded phrase cut after each of its words but the last."""
    piece = fold_piece(phrase)
    cuts = sorted(j for j in piece.word_starts if j > 0)
    return [piece.folded[:j] for j in cuts]
