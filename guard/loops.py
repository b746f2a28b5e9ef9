"""A restricted answer caught in a loop: the same word, or the same few tokens, written again and again.

Steered off a name, a small model often starts it over ("J.J.J.J." for a blocked "J.K.", "Sir Sir Sir"
for a blocked "Sir Isaac") or repeats the word it improvised ("Lensor-Lensor-Lensor") until its token
limit. Once an answer has written a unit of up to MAX_UNIT tokens twice in a row, the token that would go on
with a third copy is banned, in every spelling that folds to the same letters ("Sir", " Sir", "SIR").
Two copies stay possible ("very, very", "J.J. Abrams"); a third is a loop. Only restricted answers (a
conversation about a target) are held to this: an answer about no target stays the model's own.
"""

from __future__ import annotations

from typing import Sequence

MAX_UNIT = 12  # tokens


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
