"""Which alternatives may be shown beside an answer's tokens (the log-probabilities a client asks for):
none that writes, after the answer so far, what the answer itself may not. An alternative in which a
violation of the detector ends (a forbidden phrase, or the near-miss or beginning of one) is dropped;
the first `count` of the others are kept.

The one owner of that rule, for every producer: the guarded-text state machine (guard.guarded_stream)
applies it to the tokens it releases, and the proxy's output filter to an upstream's logprobs.
"""

from __future__ import annotations

from typing import Sequence

from guard.leaks import Detector


class Alternatives:
    """One answer's alternatives, judged token by token as the answer is released."""

    def __init__(self, detector: Detector | None, count: int | None):
        """`detector` None: nothing to guard, every alternative may be shown. `count`: how many to keep
        beside each token (None: every one that may be shown)."""
        self.detector, self.count = detector, count
        # Context enough to hold any forbidden phrase (folding drops spaces and punctuation: twice as long).
        self._window = 2 * max(map(len, detector.patterns), default=0) + 8 if detector is not None else 0
        self.context = ""  # the answer's text before the next token

    def shown(self, token: str, candidates: Sequence[str]) -> tuple[int, ...]:
        """The indices of the `candidates` for the next position that may be shown (the first `count` of
        them); the answer then goes on with `token`, the one sampled there."""
        kept = tuple(i for i, candidate in enumerate(candidates) if self.may_show(candidate))[:self.count]
        self.context += token
        return kept

    def may_show(self, piece: str) -> bool:
        """Whether `piece`, written after the answer so far, is text the answer may hold: no violation
        of the detector ends in it."""
        if self.detector is None:
            return True
        window = self.context[-self._window:]
        return not any(v.end > len(window) for v in self.detector.scan(window + piece, final=True).violations)
