"""Guarded generation on an engine: the guarded-text state machine (guard.guarded_stream) driven by a
token stream, for `guard serve` and for `guard proxy` at its full level.

Inside the engine the logits processor blocks any token that would complete a forbidden phrase
(and, on a conversation about a target, penalises tokens that approach one). What a per-token ban
cannot do is change course: blocking "Rowling" after "J.K. Row" gives "J.K. Rowley". So the state
machine reads the output as it grows and, when it says rewind, this loop aborts the engine request
and resubmits the prompt plus the output accepted so far, with the token that began the violation
banned at that position, and the model rephrases from before it. Prefix caching makes the
re-prefill cheap. Every rule (what may be released, when to rewind, when to cut) is the machine's.

Log-probabilities come out with the tokens they belong to. The engine is asked for a few more
alternatives than the client wants, so that those the machine would not release (a forbidden phrase,
or the beginning of one) can be dropped and the client still gets its count where the model has them.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator

from guard.grammar import parses
from guard.guarded_stream import CONTENT_FILTER, GuardedStream, Step
from guard.leaks import Detector, Violation
from guard.spec import GuardSpec
from server.engine import DecodeParams, Engine, PositionLogprobs
from server.serving.base import MAX_LOGPROBS, SPARE_ALTERNATIVES



@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str | None = None  # set on the last chunk only
    completion_tokens: int = 0  # on the last chunk: tokens in the final answer
    rewinds: int = 0
    decoded_tokens: int = 0  # on the last chunk: tokens the engine decoded, rewound ones included
    violations: tuple[Violation, ...] = ()  # on the last chunk: what each rewind (and a cut) was for
    logprobs: tuple[PositionLogprobs, ...] = ()  # one per token of `text`, when asked for


async def generate_guarded(engine: Engine, prompt_ids: list[int], params: DecodeParams, request_id: str,
                           detector: Detector | None, spec: GuardSpec | None, max_rewinds: int) -> AsyncIterator[Chunk]:
    """Yield the answer's text in chunks; the last chunk carries the finish reason."""
    if params.json_schema is not None:  # the grammar travels in the spec: the guard's processor keeps it
        spec = dataclasses.replace(spec or GuardSpec(()), json_schema=params.json_schema)
    stream = GuardedStream(detector, max_rewinds, params.max_tokens, params.stop, params.logprobs)
    asked = None if params.logprobs is None else min(MAX_LOGPROBS, params.logprobs + SPARE_ALTERNATIVES)
    for attempt in range(max_rewinds + 1):
        # The stream finds the stop strings: one may span a rewind's seam, where no attempt sees it whole.
        attempt_params = dataclasses.replace(params, max_tokens=stream.tokens_left, stop=(), logprobs=asked)
        attempt_spec = stream.attempt_spec(spec) if spec is not None else None
        step = Step()
        # Named ANSWER-N: an upstream engine keeps one answer's attempts on one upstream, where its prefix is cached.
        async with aclosing(engine.stream(prompt_ids + stream.resume_ids, attempt_params, attempt_spec,
                                          f"{request_id}-{attempt}")) as deltas:
            async for delta in deltas:
                step = stream.feed(delta.text, delta.token_ids, delta.finish_reason, delta.logprobs,
                                   _candidates(delta.logprobs))
                if step.action != "continue":
                    break
                if step.release or step.per_token:
                    yield Chunk(step.release, logprobs=_judged(step))
        if step.action == "continue":  # the engine ended without a finish reason
            step = stream.end()
        if step.release or step.per_token:  # what the attempt's last step released
            yield Chunk(step.release, logprobs=_judged(step))
        if step.action == "finish":
            finish_reason = step.finish_reason
            if params.json_schema is not None and finish_reason == "stop" and not params.stop and not parses(stream.text):
                finish_reason = CONTENT_FILTER  # the grammar and the guard left no way on: ended, not JSON
            yield Chunk("", finish_reason, len(stream.token_ids), stream.rewinds, stream.decoded_tokens,
                        tuple(stream.violations))
            return
    raise AssertionError("the guarded stream rewound more often than it allows")  # pragma: no cover


def _candidates(positions: tuple[PositionLogprobs, ...] | None) -> list[tuple[str, list[str]]] | None:
    """Each position's token and its alternatives, for the state machine to judge."""
    return None if positions is None else [(p.sampled.token, [t.token for t in p.top]) for p in positions]


def _judged(step: Step) -> tuple[PositionLogprobs, ...]:
    """The positions released, each with the alternatives the machine lets the client see."""
    return tuple(dataclasses.replace(position, top=tuple(position.top[i] for i in shown))
                 for position, shown in zip(step.per_token, step.shown))
