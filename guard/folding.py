"""Text folding: the one normal form every matcher compares in.

Folding lowercases, strips accents and drops every character that is not a letter or digit, so
"J.K. Rowling", "JK Rowling", "j. k. rowling's" and "R-o-w-l-i-n-g" all contain the same folded
letters. What folding loses, word boundaries, is kept beside it as the set of folded positions
where a word starts: a forbidden phrase may only *start* at a word start (so "Ron" is not found in
"iron"), but inside a phrase separators are ignored (so spelled-out names still match).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


def fold_char(ch: str) -> str:
    """The folded form of one character: '' for separators, else lowercase letters/digits."""
    if ch.isascii():
        return ch.lower() if ch.isalnum() else ""
    base = unicodedata.normalize("NFKD", ch)
    return "".join(c.lower() for c in base if c.isalnum())


def fold(text: str) -> str:
    """Lowercase letters and digits of `text`, accents stripped."""
    return "".join(fold_char(ch) for ch in text)


@dataclass(frozen=True)
class FoldedPiece:
    """A piece of text (a token, a chunk of output) in folded form.

    folded:       the folded letters
    word_starts:  folded positions that certainly start a word (a separator precedes them
                  inside the piece)
    leads_with_separator / ends_with_separator: whether the raw piece begins / ends with a
                  separator; decides whether position 0 of the *next* piece starts a word.
    origins:      for each folded position, the index of the raw character it came from.
    """

    folded: str
    word_starts: frozenset[int]
    leads_with_separator: bool
    ends_with_separator: bool
    origins: tuple[int, ...]


def fold_piece(text: str) -> FoldedPiece:
    folded: list[str] = []
    origins: list[int] = []
    starts: set[int] = set()
    previous_was_separator = False
    for index, ch in enumerate(text):
        letters = fold_char(ch)
        if not letters:
            previous_was_separator = True
            continue
        if previous_was_separator:
            starts.add(len(folded))
        previous_was_separator = False
        folded.extend(letters)
        origins.extend([index] * len(letters))
    return FoldedPiece(
        folded="".join(folded),
        word_starts=frozenset(starts),
        leads_with_separator=bool(text) and not fold_char(text[0]),
        ends_with_separator=bool(text) and not fold_char(text[-1]),
        origins=tuple(origins),
    )
