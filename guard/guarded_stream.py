"""The guarded-text state machine: what of an answer may be released, when to rewind, when to cut.

Every answer the server gives passes through one of these, whatever produced it (the embedded
engine, a LoRA view, an upstream vLLM with the guard's logits processor, or an upstream that runs
none of our code), streamed or whole. It is fed the answer as it arrives, in *units*: token ids
with their text, or, where the producer gives no token ids, pieces of text. After each unit it says:
- continue, releasing `Step.release` (possibly nothing): text that can no longer become a violation.
  Release stops at the first undecided point (an open partial match, the word being written), on a
  unit boundary, so nothing sent is ever taken back;
- rewind: a violation (a forbidden phrase, a near-miss of one) begins in an unreleased token. The
  producer's attempt must be aborted and a new one started from `resume_ids` (the tokens accepted so
  far) with `resume_bans` (the token that began the violation, and any banned there before) banned
  at its first step, so the model rephrases from before it. Only with token ids: text cannot resume;
- finish, with the finish reason: the producer's own, or "content_filter" when a violation cannot
  be rewound (no token ids, rewinds used up, or no room left). The answer is then cut before the
  violation: fail closed, never say it.

Synchronous and engine-free: the adapters (server.generation for engines, server.relay for upstream
servers that run none of our code) only move units in and released text out.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, Sequence

from guard.leaks import Detector, Violation
from guard.spec import GuardSpec

CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Step:
    release: str = ""  # text the client may have now, after what was released before
    action: Literal["continue", "rewind", "finish"] = "continue"
    finish_reason: str | None = None  # with "finish"


class GuardedStream:
    def __init__(self, detector: Detector | None, max_rewinds: int = 0, max_tokens: int | None = None):
        """`detector` None: nothing to guard, every unit is released as it comes. `max_tokens`: the
        answer's token budget; a rewind needs room to resume."""
        self.detector, self.max_rewinds, self.max_tokens = detector, max_rewinds, max_tokens
        self.text = ""  # the answer accepted so far: released, held back, or about to be judged
        self.token_ids: list[int] = []
        self._starts: list[int] = []  # text offset where each unit begins
        self.sent = 0  # text before this offset was released
        self._judged = 0  # text before this offset was judged innocent
        self._bans: dict[int, set[int]] = {}  # token position -> tokens banned there by rewinds
        self._with_tokens = False  # whether units are tokens (only then can a violation be rewound)
        self.rewinds = 0
        self.decoded_tokens = 0  # every token fed, rewound ones included
        self.violations: list[Violation] = []  # what each rewind or cut was for

    # -- the next attempt, after a rewind ----------------------------------------------------
    @property
    def resume_ids(self) -> list[int]:
        return list(self.token_ids)

    @property
    def resume_bans(self) -> tuple[int, ...]:
        return tuple(sorted(self._bans.get(len(self.token_ids), ())))

    @property
    def tokens_left(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens - len(self.token_ids)

    def attempt_spec(self, spec: GuardSpec) -> GuardSpec:
        """`spec` for the next attempt: the accepted tokens to replay, the bans where it resumes."""
        return dataclasses.replace(spec, replay_tokens=len(self.token_ids), resume_bans=self.resume_bans)

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, text: str, token_ids: Sequence[int] | None = None, finish_reason: str | None = None) -> Step:
        """One unit of the answer; `finish_reason` on the producer's last one."""
        self._add(text, token_ids)
        final = finish_reason is not None
        if self.detector is None:
            return self._release(len(self.text), finish_reason)
        scan = self.detector.scan(self.text, final=final, begin=self._judged)
        if scan.violations:
            return self._violated(scan.violations[0])
        self._judged = len(self.text) if final else self._unit_boundary(scan.undecided_from)
        return self._release(self._judged, finish_reason)

    def end(self, finish_reason: str | None = None) -> Step:
        """The producer stopped (with no finish reason of its own: "stop")."""
        return self.feed("", [] if self._with_tokens else None, finish_reason or "stop")

    def _add(self, text: str, token_ids: Sequence[int] | None) -> None:
        """A piece of text is one unit; with token ids, each token is one, all beginning where the text does."""
        self._with_tokens = token_ids is not None
        self._starts.extend([len(self.text)] * (1 if token_ids is None else len(token_ids)))
        if token_ids is not None:
            self.token_ids.extend(token_ids)
            self.decoded_tokens += len(token_ids)
        self.text += text

    def _release(self, upto: int, finish_reason: str | None) -> Step:
        release, self.sent = self.text[self.sent:upto], max(self.sent, upto)
        return Step(release, "finish" if finish_reason is not None else "continue", finish_reason)

    def _violated(self, violation: Violation) -> Step:
        self.violations.append(violation)
        k = self._unit_at(violation.start)
        resumable = (self._with_tokens and self.rewinds < self.max_rewinds and self._starts[k] >= self.sent
                     and (self.max_tokens is None or k < self.max_tokens))
        if resumable:
            self.rewinds += 1
            self._bans.setdefault(k, set()).add(self.token_ids[k])
            for position in [p for p in self._bans if p > k]:
                del self._bans[position]
            self._truncate(k)
            return Step("", "rewind")
        # Cut: on the token boundary where the producer gave tokens, else just before the violation.
        cut = self._starts[k] if self._with_tokens else violation.start
        self._truncate(k, max(cut, self.sent))
        return self._release(len(self.text), CONTENT_FILTER)

    # -- offsets -------------------------------------------------------------------------------
    def _unit_at(self, offset: int) -> int:
        """Index of the unit whose text contains `offset` (the first of units sharing an offset)."""
        k = bisect_right(self._starts, offset) - 1
        while k > 0 and self._starts[k - 1] == self._starts[k]:
            k -= 1
        return max(k, 0)

    def _unit_boundary(self, offset: int) -> int:
        """The largest unit boundary at or before `offset`."""
        if offset >= len(self.text):
            return len(self.text)
        return self._starts[self._unit_at(offset)] if self._starts else 0

    def _truncate(self, k: int, cut: int | None = None) -> None:
        """Keep units before `k` (and the text up to `cut`, by default where unit `k` begins)."""
        cut = (self._starts[k] if k < len(self._starts) else len(self.text)) if cut is None else cut
        del self._starts[k:]
        del self.token_ids[k:]
        self.text = self.text[:cut]
        self._judged = min(self._judged, len(self.text))
