"""`guard proxy` at the bias and filter levels: requests relayed to an upstream that runs none of our code.

The request goes on as the client wrote it (unknown fields included), plus, at the bias level, a
`logit_bias` against the entry tokens of the forbidden spans (guard.logit_bias). Every answer then
passes the guarded-text state machine (guard.guarded_stream) as the output filter (server.serving.relay.output_filter): the upstream
gives text, not tokens, so a violation cannot be rewound and is cut before (`content_filter`).
- streamed: the upstream's own events go out as they are, each once the machine has released its
  text (nothing undecided is sent, nothing sent is taken back); a cut ends the choice with the text
  before the violation and a finish event of ours;
- whole: the upstream's own reply, judged whole; cut, its text ends before the violation (with
  `--retry-on-leak` at the bias level, the question is first asked again with every entry at -100).
Each choice of several is filtered on its own, and a cut one ends alone. The arguments of the
upstream's tool calls are read as text after the content: a leak in them drops the choice's calls
(whole), or ends the stream of them before the fragment that holds it. Logprobs pass the same
filter: an alternative the machine would not release after the answer so far is dropped (the
upstream is asked for a few spare ones, so the client keeps its count), and a cut answer ends with
the last whole token they list. Only a policy with nothing to enforce on a request leaves it untouched.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from guard.guarded_stream import GuardedStream
from guard.restriction import Restriction, Restrictions
from server.ops import metrics
from server.protocol import responses
from runtime.restrictions import build_restrictions
from server.app import assemble_app, following
from server.state.audit import AuditLog
from server.serving.decisions import classify, record
from server.serving.generate.generation import MAX_LOGPROBS, SPARE_ALTERNATIVES
from server.state.live_policy import LivePolicy
from server.serving.relay.output_filter import filtered_events, judged_choice
from server.protocol.requests import ChatCompletionRequest, CompletionRequest
from server.protocol.responses import ERRORS, STREAM, Kind
from server.serving.generate.routes import TARGETS_HEADER
from server.settings import Enforcement, ProxySettings
from server.protocol.sse import sse_response
from server.upstream.client import Upstream, bad_gateway
from server.protocol.upstream_shapes import event_shape, reply_shape


@dataclass
class RelayState:
    settings: ProxySettings
    upstream: Upstream
    level: Enforcement  # BIAS or FILTER
    model: str  # the upstream's (first) model
    policy: LivePolicy
    biases: Any = None  # guard.logit_bias.LogitBiases at the bias level
    audit: AuditLog | None = None

    @property
    def restrictions(self) -> Restrictions:
        return self.policy.restrictions


def create_relay_app(settings: ProxySettings, live: LivePolicy, found) -> FastAPI:
    """`found`: the upstream as server.proxy.probe found it (its model, tokenizer and level)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        upstream = Upstream(settings.upstream, settings.upstream_key, settings.upstream_timeout)
        audit = AuditLog(settings.audit_log, settings.audit_text) if settings.audit_log else None
        try:
            await live.start(lambda policy, version: build_restrictions(
                settings, policy, found.tokenizer if found.level == Enforcement.BIAS else None, version))
            state = RelayState(settings, upstream, found.level, found.model, live, audit=audit)
            if found.level == Enforcement.BIAS:
                from transformers import AutoTokenizer

                from guard.logit_bias import LogitBiases

                state.biases = LogitBiases(AutoTokenizer.from_pretrained(found.tokenizer), settings.max_logit_bias)
            app.state.relay = state
            async with following(live):
                yield
        finally:
            await upstream.aclose()
            if audit is not None:
                audit.close()

    return assemble_app("guard proxy", lifespan, settings, router, live)


router = APIRouter()


def _state(request: Request) -> RelayState:
    return request.app.state.relay


@router.get("/health", response_model=responses.Health, responses={503: {"model": responses.Health}})
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    body = dict(model=state.model, upstream=state.settings.upstream, enforcement=state.level.value,
                targets=len(state.restrictions.policy.targets), policy_version=state.policy.enforced_version,
                policy_error=state.policy.error, rate_limit_error=request.app.state.rate_limiter.error)
    failing = await state.upstream.failing()
    if (problem := state.upstream.problem(failing)) is not None:  # not one upstream answers
        return JSONResponse(responses.Health(status="unhealthy", problem=problem, upstreams_failing=failing,
                                             **body).model_dump(), status_code=503)
    return JSONResponse(responses.Health(status="ok", upstreams_failing=failing, **body).model_dump())


@router.get("/v1/models", responses=ERRORS)
async def models(request: Request) -> dict:
    return await _state(request).upstream.get("/models")


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def prometheus_metrics(request: Request) -> Response:
    return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)


RELAYED = {**ERRORS, 200: {"content": {"application/json": {}, **STREAM}}}


@router.post("/v1/chat/completions", responses=RELAYED)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _relay(request, "chat", body)


@router.post("/v1/completions", responses=RELAYED)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _relay(request, "text", body)


async def _relay(request: Request, kind: Kind, body: ChatCompletionRequest | CompletionRequest) -> Response:
    state = _state(request)
    raw = await request.json()  # forwarded as the client wrote it: unknown fields included
    path = "/chat/completions" if kind == "chat" else "/completions"
    conversation = body.conversation()
    restriction = await classify(request, state.restrictions, conversation)
    headers = {TARGETS_HEADER: ",".join(restriction.target_ids)}
    answer = _Answer(state, kind, restriction, request, conversation.asked, body.logprobs_count)
    if body.stream:
        return await _stream_response(state.upstream, path, answer.upstream_body(raw), kind, answer.events, headers)
    return JSONResponse(await answer.whole(path, raw), headers=headers)


async def _stream_response(upstream: Upstream, path: str, body: dict, kind: Kind,
                           transform: Callable[[AsyncIterator[Any]], AsyncIterator[Any]], headers: dict) -> Response:
    """Open the upstream stream before answering, so that its failure is a proper HTTP error; then
    relay `transform(events)`. A failure once streaming is reported in-band (server.protocol.sse)."""
    stack = AsyncExitStack()
    try:
        events = await stack.enter_async_context(upstream.stream(path, body, event_shape(kind)))
        first = await anext(events)
    except StopAsyncIteration:
        await stack.aclose()
        raise bad_gateway("the stream ended before its first event") from None
    except BaseException:
        await stack.aclose()
        raise

    async def relayed() -> AsyncIterator[Any]:
        async def replay() -> AsyncIterator[Any]:
            yield first
            async for event in events:
                yield event
        async with stack:
            async for event in transform(replay()):
                yield event
    return sse_response(relayed(), headers)


class _Answer:
    """One relayed request's answer, through the output filter (when its restriction has a detector)."""

    def __init__(self, state: RelayState, kind: Kind, restriction: Restriction, request: Request, prompt: str,
                 logprobs: int | None):
        self.state, self.kind, self.restriction, self.request, self.prompt = state, kind, restriction, request, prompt
        self.logprobs = logprobs  # the alternatives the client asked for beside each token (None: no logprobs)
        self.id = responses.new_id("proxy")  # the audit log's request id

    def upstream_body(self, raw: dict, strongest: bool = False) -> dict:
        if self.logprobs is not None and self.restriction.detector is not None:
            # A few spare alternatives, to stand in for those the filter drops.
            raw = {**raw, ("top_logprobs" if self.kind == "chat" else "logprobs"): min(
                MAX_LOGPROBS, self.logprobs + SPARE_ALTERNATIVES)}
        if self.state.biases is None or self.restriction.spec is None:
            return raw
        guard_bias = self.state.biases.for_spec(self.restriction.spec, strongest)
        if not guard_bias:
            return raw
        client_bias = {str(k): v for k, v in (raw.get("logit_bias") or {}).items()}
        return {**raw, "logit_bias": {**client_bias, **{t: min(v, client_bias.get(t, 0.0))
                                                         for t, v in guard_bias.items()}}}

    def _finished(self, index: int, machine: GuardedStream, finish_reason: str | None, several: bool) -> None:
        record(self.request, self.state.audit, self.restriction, f"{self.id}-{index}" if several else self.id,
               finish_reason, tuple(machine.violations), self.prompt, machine.text)

    def events(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The client's stream."""
        if self.restriction.detector is None:
            return events
        return filtered_events(self.kind, self.restriction.detector, events, self._finished, self.logprobs)

    async def whole(self, path: str, raw: dict) -> dict:
        """A whole answer, judged whole; cut by the filter, it is asked once more fully biased if so configured."""
        reply, machines = await self._judged(path, raw, strongest=False)
        if (any(m.violations for m in machines) and self.state.settings.retry_on_leak
                and self.state.biases is not None and self.restriction.spec is not None):
            reply, machines = await self._judged(path, raw, strongest=True)
        for index, machine in enumerate(machines):
            self._finished(index, machine, reply["choices"][index]["finish_reason"], len(machines) > 1)
        return reply

    async def _judged(self, path: str, raw: dict, strongest: bool) -> tuple[dict, list[GuardedStream]]:
        """The upstream's reply, each choice cut before a violation; and the machines that judged them
        (none: nothing to guard)."""
        reply = await self.state.upstream.post(path, self.upstream_body(raw, strongest),
                                               self.state.settings.max_request_seconds, reply_shape(self.kind))
        if self.restriction.detector is None:
            return reply, []
        judged = await asyncio.to_thread(lambda: [  # off the event loop: a long answer takes a while to read
            judged_choice(self.kind, self.restriction.detector, choice, self.logprobs) for choice in reply["choices"]])
        return {**reply, "choices": [choice for choice, _ in judged]}, [machine for _, machine in judged]
