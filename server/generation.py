"""Guarded generation: the engine's token stream, held back and rewound so nothing forbidden leaks.

Inside the engine the logits processor blocks any token that would complete a forbidden phrase
and penalises tokens that approach one. What a per-token ban cannot do is change course: blocking
"Rowling" after "J.K. Row" gives "J.K. Rowley" or "J.K.R.D.J.". So this loop reads the output as
it grows and, when the detector finds a violation (a near-miss spelling, a broken partial match),
*rewinds*: it aborts the engine request and resubmits the prompt plus the output accepted so far,
with the token that began the violation banned at that position, and the model rephrases from
before it. Prefix caching makes the re-prefill cheap.

Streaming holds back the undecided tail (an open partial match, the word being written), released
on token boundaries, so text already sent never needs to be taken back. If the rewinds run out,
the answer is cut before the violation and ends with finish_reason "content_filter": fail closed.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from guard.leaks import LeakDetector
from guard.spec import GuardSpec
from server.engine import DecodeParams, Delta


class Engine(Protocol):
    def stream(self, prompt_ids: list[int], params: DecodeParams, spec: GuardSpec | None,
               request_id: str) -> AsyncIterator[Delta]: ...


@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str | None = None  # set on the last chunk only
    completion_tokens: int = 0  # on the last chunk: tokens in the final answer
    rewinds: int = 0
    decoded_tokens: int = 0  # on the last chunk: tokens the engine decoded, rewound ones included


@dataclass
class _Output:
    token_ids: list[int] = dataclasses.field(default_factory=list)
    starts: list[int] = dataclasses.field(default_factory=list)  # text offset where each token begins
    text: str = ""

    def add(self, delta: Delta) -> None:
        for token_id in delta.token_ids:
            self.token_ids.append(token_id)
            self.starts.append(len(self.text))
        self.text += delta.text

    def token_at(self, char_index: int) -> int:
        """Index of the token whose text contains `char_index` (the first of a tie)."""
        k = bisect_right(self.starts, char_index) - 1
        while k > 0 and self.starts[k - 1] == self.starts[k]:
            k -= 1
        return max(k, 0)

    def truncate(self, k: int) -> None:
        cut = self.starts[k] if k < len(self.starts) else len(self.text)
        del self.token_ids[k:], self.starts[k:]
        self.text = self.text[:cut]

    def release_point(self, char_index: int) -> int:
        """The largest token boundary at or before `char_index`."""
        if char_index >= len(self.text):
            return len(self.text)
        return self.starts[self.token_at(char_index)] if self.starts else 0


async def generate_guarded(
    engine: Engine,
    prompt_ids: list[int],
    params: DecodeParams,
    request_id: str,
    detector: LeakDetector | None,
    spec: GuardSpec | None,
    max_rewinds: int,
) -> AsyncIterator[Chunk]:
    """Yield the answer's text in chunks; the last chunk carries the finish reason."""
    if detector is None or spec is None:
        produced = 0
        async with aclosing(engine.stream(prompt_ids, params, None, request_id)) as stream:
            async for delta in stream:
                produced += len(delta.token_ids)
                done = delta.finish_reason is not None
                yield Chunk(delta.text, delta.finish_reason, produced if done else 0, 0, produced if done else 0)
        return

    out = _Output()
    sent = 0  # characters already released to the client
    judged = 0  # text before this index is judged innocent
    rewinds = 0
    bans: dict[int, set[int]] = {}  # output position -> tokens banned there by rewinds
    attempt = 0
    decoded = 0
    while True:
        accepted = len(out.token_ids)
        attempt_spec = dataclasses.replace(
            spec,
            replay_tokens=accepted,
            step_bans=((0, tuple(sorted(bans[accepted]))),) if bans.get(accepted) else (),
        )
        attempt_params = dataclasses.replace(params, max_tokens=params.max_tokens - accepted)
        violation = None
        finish = None
        async with aclosing(
            engine.stream(prompt_ids + out.token_ids, attempt_params, attempt_spec, f"{request_id}-{attempt}")
        ) as stream:
            async for delta in stream:
                out.add(delta)
                decoded += len(delta.token_ids)
                finish = delta.finish_reason
                scan = detector.scan(out.text, final=finish is not None, begin=judged)
                if scan.violations:
                    violation = scan.violations[0]
                    break
                judged = out.release_point(scan.undecided_from)
                if judged > sent:
                    yield Chunk(out.text[sent:judged])
                    sent = judged
                if finish is not None:
                    break
        attempt += 1
        if violation is None:
            if len(out.text) > sent:
                yield Chunk(out.text[sent:])
            yield Chunk("", finish or "stop", len(out.token_ids), rewinds, decoded)
            return
        k = out.token_at(violation.start)
        if rewinds >= max_rewinds or out.starts[k] < sent or accepted >= params.max_tokens:
            out.truncate(k)  # fail closed: never say it, stop here
            if len(out.text) > sent:
                yield Chunk(out.text[sent:])
            yield Chunk("", "content_filter", len(out.token_ids), rewinds, decoded)
            return
        rewinds += 1
        bans.setdefault(k, set()).add(out.token_ids[k])
        for position in [p for p in bans if p > k]:
            del bans[position]
        out.truncate(k)
        judged = min(judged, len(out.text))
