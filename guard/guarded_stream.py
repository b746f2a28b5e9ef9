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
  at its first step, and `avoided` (every phrase the answer was rewound for) begun by no token from
  then on, so the model rephrases from before it. Only with token ids: text cannot resume;
- finish, with the finish reason: the producer's own, "stop" at the first of the client's stop
  strings (the answer ends before it), or "content_filter" when a violation cannot be rewound (no
  token ids, rewinds used up, or no room left). The answer is then cut before the violation: fail
  closed, never say it.

Stop strings are the machine's to find, not the producer's, where it rewinds: a stop string may begin
in text accepted before a rewind and end in the next attempt, where no engine sees it whole. Text that
could still begin one is held back like an open match.

Data that travels with each token (its log-probabilities) is released with the token, judged: the
alternatives a client may see beside a token are those guard.alternatives lets it see (none may
spell, or begin to spell, what the answer itself may not), and `Step.shown` says which they are.

Synchronous and engine-free: the adapters (server.serving.generate.generation for engines,
server.serving.relay.output_filter for upstream servers that run none of our code) only move units
in and released text out; nothing calls back into the machine.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from guard.alternatives import Alternatives
from guard.leaks import Detector, Violation
from guard.spec import GuardSpec

CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Step:
    release: str = ""  # text the client may have now, after what was released before
    action: Literal["continue", "rewind", "finish"] = "continue"
    finish_reason: str | None = None  # with "finish"
    per_token: tuple[Any, ...] = ()  # what travelled with each token released now, in order
    shown: tuple[tuple[int, ...], ...] = ()  # with per_token and alternatives: each token's alternatives that may be shown


class GuardedStream:
    def __init__(self, detector: Detector | None, max_rewinds: int = 0, max_tokens: int | None = None,
                 stop: Sequence[str] = (), alternatives: int | None = None):
        """`detector` None: nothing to guard, every unit is released as it comes. `max_tokens`: the
        answer's token budget; a rewind needs room to resume. `stop`: the client's stop strings.
        `alternatives`: how many alternatives to show beside each token, where they are fed."""
        self.detector, self.max_rewinds, self.max_tokens = detector, max_rewinds, max_tokens
        self.stop = tuple(s for s in stop if s)
        self._alternatives = Alternatives(detector, alternatives)
        self.text = ""  # the answer accepted so far: released, held back, or about to be judged
        self.token_ids: list[int] = []
        self._per_token: list[Any] = []  # parallel to token_ids, when the producer sends it
        self._candidates: list[tuple[str, Sequence[str]]] = []  # parallel to token_ids: (token, its alternatives)
        self._tokens_sent = 0
        self._starts: list[int] = []  # text offset where each unit begins
        self.sent = 0  # text before this offset was released
        self._judged = 0  # text before this offset was judged innocent
        self._bans: dict[int, set[int]] = {}  # token position -> tokens banned there by rewinds
        self.avoided: set[str] = set()  # the folded phrases rewound for: not to be begun again
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
        """`spec` for the next attempt: the accepted tokens to replay, the bans where it resumes, the
        phrases it must not begin."""
        return dataclasses.replace(spec, replay_tokens=len(self.token_ids), resume_bans=self.resume_bans,
                                   avoid=tuple(sorted(self.avoided)))

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, text: str, token_ids: Sequence[int] | None = None, finish_reason: str | None = None,
             per_token: Sequence[Any] | None = None,
             alternatives: Sequence[tuple[str, Sequence[str]]] | None = None) -> Step:
        """One unit of the answer; `finish_reason` on the producer's last one. `per_token`: data for each
        token of `token_ids` (their log-probabilities), released with them; `alternatives`: for each, its
        text and the texts of the alternatives beside it, judged when it is released (`Step.shown`)."""
        before = len(self.text)
        self._add(text, token_ids)
        if per_token is not None:
            self._per_token.extend(per_token)
        if alternatives is not None:
            self._candidates.extend(alternatives)
        if (stop := self._stop_string(before)) is not None:
            # The answer ends before it; the units that wrote it count, as vLLM counts them.
            self._truncate(self._unit_at(stop[1] - 1) + 1, stop[0])
            finish_reason = "stop"
        final = finish_reason is not None
        held = len(self.text) if final else self._stop_prefix_from()
        if self.detector is None:
            return self._release(self._unit_boundary(held), finish_reason)
        scan = self.detector.scan(self.text, final=final, begin=self._judged)
        if scan.violations:
            return self._violated(scan.violations[0])
        self._judged = len(self.text) if final else self._unit_boundary(scan.undecided_from)
        return self._release(min(self._judged, self._unit_boundary(held)), finish_reason)

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
        tokens = len(self._starts) if finish_reason is not None else bisect_left(self._starts, self.sent)
        per_token = tuple(self._per_token[self._tokens_sent:tokens])
        shown = tuple(self._alternatives.shown(*candidates) for candidates in self._candidates[self._tokens_sent:tokens])
        self._tokens_sent = max(self._tokens_sent, tokens)
        return Step(release, "finish" if finish_reason is not None else "continue", finish_reason, per_token, shown)

    def _violated(self, violation: Violation) -> Step:
        self.violations.append(violation)
        k = self._unit_at(violation.start)
        resumable = (self._with_tokens and self.rewinds < self.max_rewinds and self._starts[k] >= self.sent
                     and (self.max_tokens is None or k < self.max_tokens))
        if resumable:
            self.rewinds += 1
            self._bans.setdefault(k, set()).add(self.token_ids[k])
            self.avoided.add(violation.forbidden)
            for position in [p for p in self._bans if p > k]:
                del self._bans[position]
            self._truncate(k)
            return Step("", "rewind")
        # Cut: on the token boundary where the producer gave tokens, else just before the violation.
        cut = self._starts[k] if self._with_tokens else violation.start
        self._truncate(k, max(cut, self.sent))
        return self._release(len(self.text), CONTENT_FILTER)

    # -- stop strings ------------------------------------------------------------------------
    def _stop_string(self, before: int) -> tuple[int, int] | None:
        """(start, end) of the first stop string, among those ending in text added after `before`."""
        if not self.stop:
            return None
        start = max(0, before - max(map(len, self.stop)) + 1)
        found = [(i, i + len(s)) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(found) if found else None

    def _stop_prefix_from(self) -> int:
        """Where a stop string may be beginning at the end of the text (its length: nowhere)."""
        longest = max(map(len, self.stop), default=1)
        for i in range(max(self.sent, len(self.text) - longest + 1), len(self.text)):
            if any(s.startswith(self.text[i:]) for s in self.stop):
                return i
        return len(self.text)

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
        del self._per_token[k:]
        del self._candidates[k:]
        self.text = self.text[:cut]
        self._judged = min(self._judged, len(self.text))
