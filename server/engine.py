"""What an engine is: the one interface the routes, the guarded generation loop and the benchmarks hold.

Implemented by the embedded vLLM engine and its LoRA views (server.engines.embedded), by a `vllm
serve` upstream that runs the guard's logits processor (server.upstream.engine), and by the tests'
fakes. An engine speaks token ids: `stream(prompt_ids, params, spec, request_id)` yields `Delta`s,
the guard's spec travelling with the request into the engine's logits processor.

Engines raise the exceptions below, never HTTP errors: server.protocol.errors alone maps them to statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

from guard.spec import GuardSpec


@dataclass(frozen=True)
class DecodeParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: decode a fixed number of tokens
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # the client's (token id, bias); the guard's blocks still win
    logprobs: int | None = None  # with each token, the log-probabilities of this many most likely ones (None: none)
    json_schema: str | None = None  # the answer must be JSON of this schema (guard.grammar; it travels in the spec)
    skip_special_tokens: bool = True  # False: special tokens are written in the text (a tool-call format's markers)


@dataclass(frozen=True)
class TokenLogprob:
    token: str  # its text, as vLLM writes it
    logprob: float  # under the distribution the token was sampled from (after the guard's biases)


@dataclass(frozen=True)
class PositionLogprobs:
    """One position of an answer: the token sampled there, and the most likely ones, most likely first."""
    sampled: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    token_ids: list[int]
    text: str
    finish_reason: str | None  # "stop", "length", "abort" or None while running
    logprobs: tuple[PositionLogprobs, ...] | None = None  # one per token, when asked for


@dataclass(frozen=True)
class EngineStats:
    """What /metrics reads of an engine: its scheduler, and where its logits processor publishes."""
    running: int = 0
    waiting: int = 0
    step_stats_path: Path | None = None


class Engine(Protocol):
    tokenizer: Any  # the model's Hugging Face tokenizer (set once started)
    max_model_len: int

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def health(self) -> str | None:
        """None when the engine can serve; else what is wrong."""

    def stream(self, prompt_ids: list[int], params: DecodeParams, spec: GuardSpec | None,
               request_id: str) -> AsyncIterator[Delta]: ...

    def stats(self) -> EngineStats | None:
        """None: nothing to report (a view of another engine, an engine in another process)."""


# -- what can go wrong, by kind: server.protocol.errors maps each to its HTTP status ----------------------
class EngineError(Exception):
    """An engine could not answer. `code`: a machine-readable reason for the client."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message, self.code = message, code


class EngineUnavailable(EngineError):
    """Not running, stopped, or not reachable (503)."""


class EngineTimeout(EngineError):
    """Silent for too long (504)."""


class EngineFailed(EngineError):
    """Answered with a failure or with something that is not a valid answer (502)."""


class RequestRejected(EngineError):
    """The engine refused the request as invalid (4xx). `status` and `body`: an upstream's own."""

    def __init__(self, message: str, status: int = 400, body: dict | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.body, self.param = status, body, param
