"""What the one router (server.router) holds: a `Serving`, bound at start-up, and the `CompletionJob`
it hands it, one per completion request.

A job is made once, at the edge, from the validated body, and flows one way: detection and
restriction (server.serving.decisions) fill in `restriction`; generation fills in the prompt, the
decoding parameters and each choice's state as its answer is written; the response is built from it,
and the decisions record it. Nothing rebuilds it, and nothing is called back.

Two implementations: token-level generation over an engine (server.serving.generate: `guard serve`,
and `guard proxy` at its full level) and the relay through the output filter (server.serving.relay:
the proxy's bias and filter levels). Neither imports the other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from fastapi.responses import Response

from guard.conversation import Conversation
from guard.leaks import Violation
from guard.restriction import UNRESTRICTED, Restriction
from server.engine import DecodeParams
from server.protocol import responses
from server.protocol.requests import ChatCompletionRequest, CompletionRequest

TARGETS_HEADER = "x-guard-targets"
# Logprobs: a few more alternatives than the client wants are asked of the producer, so that those the
# guard drops (guard.alternatives) can be stood in for and the client still gets its count.
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs, and OpenAI's top_logprobs limit
SPARE_ALTERNATIVES = 5


@dataclass
class ChoiceState:
    """One choice's answer as it is written: what the client has of it, and how it ended."""
    index: int
    text: str = ""  # the answer the client has (or, whole, will have)
    finish_reason: str | None = None  # set once it ended
    violations: tuple[Violation, ...] = ()  # what each rewind was for, then what a cut was for
    completion_tokens: int = 0
    recorded: bool = False  # its decision is in the metrics and the audit log

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class CompletionJob:
    """One completion request's life: made at the edge, filled in as it flows, never rebuilt."""
    body: ChatCompletionRequest | CompletionRequest  # validated; `body.kind` says chat or text
    body_bytes: bytes  # the body as the client sent it
    key_id: str  # the API key it came with ("anonymous" with no keys configured)
    id: str = ""
    conversation: Conversation = field(init=False)
    received: float = field(default_factory=time.monotonic)
    restriction: Restriction = UNRESTRICTED  # detection's decision: the targets, their scores, the spec
    prompt_ids: list[int] = field(default_factory=list)  # generation over an engine: the prompt's tokens
    params: DecodeParams | None = None  # generation over an engine: the decoding parameters
    choices: list[ChoiceState] = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "classify", "first_chunk", "done"

    def __post_init__(self) -> None:
        self.id = self.id or responses.new_id(self.body.id_prefix)
        self.conversation = self.body.conversation()
        self.choices = [ChoiceState(i) for i in range(self.body.n)]

    @cached_property
    def raw(self) -> dict[str, Any]:
        """The body as the client wrote it (the relay forwards it: unknown fields included)."""
        return json.loads(self.body_bytes)

    @property
    def kind(self) -> responses.Kind:
        return self.body.kind

    @property
    def headers(self) -> dict[str, str]:
        """Every guarded response's headers: the targets detected."""
        return {TARGETS_HEADER: ",".join(self.restriction.target_ids)}

    def choice_id(self, index: int) -> str:
        """The audit log's id of a choice: the request's, with the choice's index where there are several."""
        return self.id if self.body.n == 1 else f"{self.id}-{index}"

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)

    def mark(self, event: str) -> None:
        """The time `event` happened, in seconds since the request came in."""
        self.timings[event] = time.monotonic() - self.received


@dataclass(frozen=True)
class HealthReport:
    """What a serving adds to /health: what is wrong (None: it can serve), and its own fields."""
    problem: str | None
    fields: dict[str, Any]


class Serving(Protocol):
    """How completion requests are answered, bound at start-up (server.router holds one)."""

    async def complete(self, job: CompletionJob) -> Response: ...

    async def models(self) -> dict[str, Any]:
        """GET /v1/models' body."""

    async def health(self) -> HealthReport: ...
