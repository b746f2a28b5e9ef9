"""A restricted answer caught in a loop: the same word, or the same few tokens, written again and again.

Steered off a name, a small model often starts it over ("J.J.J.J." for a blocked "J.K.", "Sir Sir Sir"
for a blocked "Sir Isaac") or cycles through the words it improvised ("Lemon-Camel-Lemon-Lemon-Camel")
until its token limit. Two rules end such loops, for restricted answers only (a conversation about a
target): an answer about no target stays the model's own.
- a unit of up to MAX_UNIT tokens written twice in a row: the token that would go on with a third copy
  is banned, in every spelling that folds to the same letters ("Sir", " Sir", "SIR"). Two copies stay
  possible ("very, very", "J.J. Abrams");
- a word that makes up MAX_USES of the last WINDOW finished words: the tokens that would begin it again
  are banned until it does not. Function words ("the", "of", "he": Zipf frequency >= FUNCTION_ZIPF in
  wordfreq's English list) are exempt: prose repeats them.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Sequence

from guard.folding import FoldedPiece

MAX_UNIT = 12  # tokens
WINDOW, MAX_USES = 8, 3  # words
FUNCTION_ZIPF = 6.0


def looping_start(folded: Sequence[str]) -> str | None:
    """The folded text of the token that would go on with a third copy of a unit the tokens `folded`
    (each token's folded letters, oldest first) wrote twice in a row, where they end with the two copies
    and, perhaps, the first tokens of a third ("-Lemon-Lemon" then "-": "lemon"); None when they end in
    no such repeat. A unit counts only with a letter in it (runs of punctuation or new lines are no
    loop), and only a token with letters is banned."""
    for size in range(1, MAX_UNIT + 1):
        if len(folded) <= size or folded[-1] != folded[-1 - size]:
            continue  # the last token must be where the unit repeats, whatever of it is begun
        for begun in range(size):
            if len(folded) < 2 * size + begun:
                break
            tail = folded[len(folded) - 2 * size - begun:]
            unit = tail[:size]
            if (tail[size:2 * size] == unit and tail[2 * size:] == unit[:begun] and unit[begun]
                    and any(c.isalpha() for c in "".join(unit))):
                return unit[begun]
    return None


def overused_words(pieces: Sequence[FoldedPiece]) -> set[str]:
    """The words (folded) that make up MAX_USES or more of the last WINDOW finished words the tokens
    `pieces` (oldest first) write, function words aside."""
    words, finished = _words(pieces)
    window = (words if finished else words[:-1])[-WINDOW:]
    return {w for w, uses in Counter(window).items() if uses >= MAX_USES and not _function_word(w)}


def _words(pieces: Sequence[FoldedPiece]) -> tuple[list[str], bool]:
    """The folded words the pieces write, oldest first, and whether the last one is finished."""
    words: list[str] = []
    open_word = False
    for piece in pieces:
        if not piece.folded:
            open_word = False
            continue
        for n, word in enumerate(piece.words()):
            if n == 0 and open_word and not piece.leads_with_separator:
                words[-1] += word
            else:
                words.append(word)
        open_word = not piece.ends_with_separator
    return words, not open_word


@lru_cache(maxsize=4096)
def _function_word(word: str) -> bool:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en") >= FUNCTION_ZIPF
