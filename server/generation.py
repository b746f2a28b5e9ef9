"""Guarded generation on an engine: the guarded-text state machine (guard.guarded_stream) driven by a
token stream, for `guard serve` and for `guard proxy` at its full level.

Inside the engine the logits processor blocks any token that would complete a forbidden phrase
(and, on a conversation about a target, penalises tokens that approach one). What a per-token ban
cannot do is change course: blocking "Rowling" after "J.K. Row" gives "J.K. Rowley". So the state
machine reads the output as it grows and, when it says rewind, this loop aborts the engine request
and resubmits the prompt plus the output accepted so far, with the token that began the violation
banned at that position, and the model rephrases from before it. Prefix caching makes the
re-prefill cheap. Every rule (what may be released, when to rewind, when to cut) is the machine's.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator

from guard.guarded_stream import GuardedStream, Step
from guard.leaks import Detector, Violation
from guard.spec import GuardSpec
from server.engine import DecodeParams, Engine


@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str | None = None  # set on the last chunk only
    completion_tokens: int = 0  # on the last chunk: tokens in the final answer
    rewinds: int = 0
    decoded_tokens: int = 0  # on the last chunk: tokens the engine decoded, rewound ones included
    violations: tuple[Violation, ...] = ()  # on the last chunk: what each rewind (and a cut) was for


async def generate_guarded(engine: Engine, prompt_ids: list[int], params: DecodeParams, request_id: str,
                           detector: Detector | None, spec: GuardSpec | None, max_rewinds: int) -> AsyncIterator[Chunk]:
    """Yield the answer's text in chunks; the last chunk carries the finish reason."""
    stream = GuardedStream(detector, max_rewinds, params.max_tokens)
    for attempt in range(max_rewinds + 1):
        attempt_params = dataclasses.replace(params, max_tokens=stream.tokens_left)
        attempt_spec = stream.attempt_spec(spec) if spec is not None else None
        step = Step()
        async with aclosing(engine.stream(prompt_ids + stream.resume_ids, attempt_params, attempt_spec,
                                          f"{request_id}-{attempt}")) as deltas:
            async for delta in deltas:
                step = stream.feed(delta.text, delta.token_ids, delta.finish_reason)
                if step.release:
                    yield Chunk(step.release)
                if step.action != "continue":
                    break
        if step.action == "continue":  # the engine ended without a finish reason
            step = stream.end()
            if step.release:
                yield Chunk(step.release)
        if step.action == "finish":
            yield Chunk("", step.finish_reason, len(stream.token_ids), stream.rewinds, stream.decoded_tokens,
                        tuple(stream.violations))
            return
    raise AssertionError("the guarded stream rewound more often than it allows")  # pragma: no cover
