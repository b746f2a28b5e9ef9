"""Text folding: the one normal form every matcher compares in.

Folding lowercases, strips accents and drops every character that is not a letter or digit, so
"J.K. Rowling", "JK Rowling", "j. k. rowling's" and "R-o-w-l-i-n-g" all contain the same folded
letters. It also undoes the disguises a letter can wear, so that one pattern covers them all:
- compatibility forms (NFKD: fullwidth "Ｒｏｎ", mathematical "𝐑𝐨𝐧", ligatures "ﬁ");
- lookalikes from other scripts, by Unicode's confusables data (the `confusable-homoglyphs`
  package): Cyrillic "о", "і", "е", Greek "ο" fold to the Latin letter they imitate;
- digits written for letters: 0 o, 1 i, 3 e, 4 a, 5 s, 7 t ("H3rm10n3" is "hermione"). Every digit
  folds the same way everywhere, so numbers still match themselves ("1879" folds to "i8t9" in the
  pattern and in the answer alike); 2, 6, 8 and 9 stay digits, so "H2O" and "E = mc2" keep theirs.
Symbols written for letters ("V@ldemort", "Herm!one") stay separators, as punctuation must: they
split the name in two, and the leak detector's near-miss rules catch what is left of it.

What folding loses, word boundaries, is kept beside it as the set of folded positions where a word starts: a forbidden phrase may only *start* at a word start (so "Ron" is not found in
"iron"), but inside a phrase separators are ignored (so spelled-out names still match).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

LETTER_DIGITS = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"}
_ASCII = {c: (LETTER_DIGITS.get(c, c.lower()) if c.isalnum() else "") for c in map(chr, range(128))}


def fold_char(ch: str) -> str:
    """The folded form of one character: '' for separators, else lowercase letters/digits."""
    folded = _ASCII.get(ch)
    return folded if folded is not None else _fold_other(ch)


@lru_cache(maxsize=65536)
def _fold_other(ch: str) -> str:
    """A non-ASCII character folded: its compatibility decomposition, each part as the ASCII letter or
    digit it imitates where it imitates one. A letter or digit never folds to nothing (so a word's
    folded length is at least its length: what bounds the leak detector's work on a long word)."""
    letters = []
    for part in unicodedata.normalize("NFKD", ch):
        if part in _ASCII:
            letters.append(_ASCII[part])
        elif (lookalike := _lookalikes().get(part)) is not None:
            letters.append(_ASCII[lookalike])
        elif part.isalnum():
            letters.append(part.lower())
    return "".join(letters) or (ch.lower() if ch.isalnum() else "")


@cache
def _lookalikes() -> dict[str, str]:
    """Non-ASCII letters and digits that Unicode's confusables data says look like an ASCII letter or
    digit. Symbols that look like one ("°", "×") stay separators: they are punctuation in real text."""
    from confusable_homoglyphs.utils import load

    table = {}
    for ch, homoglyphs in load("confusables.json").items():
        if len(ch) == 1 and not ch.isascii() and ch.isalnum():
            ascii_ = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()]
            if ascii_:
                table[ch] = ascii_[0]
    return table


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

    def words(self) -> list[str]:
        """The folded words of the piece, split at its word starts (the first may go on a word before it)."""
        cuts = [0, *sorted(self.word_starts - {0}), len(self.folded)]
        return [self.folded[a:b] for a, b in zip(cuts, cuts[1:])]


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
