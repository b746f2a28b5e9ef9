"""`guard proxy` at the bias and filter levels: requests relayed to an upstream that runs none of our code.

The request goes on as the client wrote it (unknown fields included), plus, at the bias level, a
`logit_bias` against the entry tokens of the forbidden spans (guard.logit_bias). Every answer then
passes the guarded-text state machine (guard.guarded_stream) as the output filter: the upstream
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

from collections import deque
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from guard.guarded_stream import CONTENT_FILTER, GuardedStream
from guard.restriction import Restriction, Restrictions
from server import metrics, responses
from runtime.restrictions import build_restrictions
from server.app import assemble_app, following
from server.audit import AuditLog
from server.decisions import classify, record
from server.engine import EngineError
from server.generation import MAX_LOGPROBS, SPARE_ALTERNATIVES
from server.live_policy import LivePolicy
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.responses import ERRORS, STREAM, Kind
from server.routes import TARGETS_HEADER
from server.settings import Enforcement, ProxySettings
from server.sse import sse_response
from server.upstream import Upstream, bad_gateway


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
                targets=len(state.restrictions.policy.targets), policy_version=state.policy.enforced_version)
    try:
        await state.upstream.get("/models")
    except EngineError as exc:
        return JSONResponse(responses.Health(status="unhealthy", problem=exc.message, **body).model_dump(),
                            status_code=503)
    return JSONResponse(responses.Health(status="ok", **body).model_dump())


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
        return await _stream_response(state.upstream, path, answer.upstream_body(raw), answer.events, headers)
    return JSONResponse(await answer.whole(path, raw), headers=headers)


async def _stream_response(upstream: Upstream, path: str, body: dict,
                           transform: Callable[[AsyncIterator[Any]], AsyncIterator[Any]], headers: dict) -> Response:
    """Open the upstream stream before answering, so that its failure is a proper HTTP error; then
    relay `transform(events)`. A failure once streaming is reported in-band (server.sse)."""
    stack = AsyncExitStack()
    try:
        events = await stack.enter_async_context(upstream.stream(path, body))
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
                                               self.state.settings.max_request_seconds)
        if self.restriction.detector is None:
            return reply, []
        judged = [self._judged_choice(choice) for choice in _choices(reply)]
        return {**reply, "choices": [choice for choice, _ in judged]}, [machine for _, machine in judged]

    def _judged_choice(self, choice: dict) -> tuple[dict, GuardedStream]:
        text = (choice.get("message") or {}).get("content") if self.kind == "chat" else choice.get("text")
        if text is not None and not isinstance(text, str):
            raise bad_gateway("the reply's text is not a string")
        calls = _arguments((choice.get("message") or {}).get("tool_calls")) if self.kind == "chat" else ""
        machine = GuardedStream(self.restriction.detector)
        finish_reason = None if calls else choice.get("finish_reason") or "stop"
        cut = machine.feed(text or "", None, finish_reason).finish_reason == CONTENT_FILTER
        if calls and not cut:  # the calls' arguments are read after the text: a leak in them drops every call
            cut = machine.feed(calls, None, choice.get("finish_reason") or "stop").finish_reason == CONTENT_FILTER
        kept = machine.text[:len(text or "")]
        if choice.get("logprobs"):  # cut, the answer ends with the last whole token its logprobs list
            alternatives = _Alternatives(self.kind, machine, self.logprobs)
            choice = {**choice, "logprobs": alternatives.judged(choice["logprobs"], len(kept) if cut else None)}
            kept = alternatives.context
        if cut:
            if self.kind == "chat":
                choice = {**choice, "message": {**choice["message"], "content": kept, "tool_calls": []}}
            else:
                choice = {**choice, "text": kept}
            choice = {**choice, "finish_reason": CONTENT_FILTER}
        return choice, machine


@dataclass
class _FilteredChoice:
    """One choice of a stream through the output filter: its machine, and its events not sent yet."""
    machine: GuardedStream
    alternatives: "_Alternatives"
    held: deque[tuple[dict, int, int]] = field(default_factory=deque)  # each with the text offsets it spans
    done: bool = False

    def released(self) -> Iterator[dict]:
        while self.held and self.held[0][2] <= self.machine.sent:
            yield self.alternatives.judged_event(self.held.popleft()[0])

    def cut(self, kind: Kind, index: int, identity: dict) -> Iterator[dict]:
        """Cut: the events wholly before the violation, the rest of the text before it, and the end."""
        text = self.machine.text
        while self.held and self.held[0][2] <= len(text):
            yield self.alternatives.judged_event(self.held.popleft()[0])
        if self.held and text[self.held[0][1]:] and not self.held[0][0]["choices"][0].get("delta", {}).get("tool_calls"):
            rest, logprobs = text[self.held[0][1]:], self.held[0][0]["choices"][0].get("logprobs")
            if logprobs:  # only the whole tokens its logprobs list
                before = len(self.alternatives.context)
                logprobs = self.alternatives.judged(logprobs, len(text))
                rest = self.alternatives.context[before:]
            if rest:
                event = {**_ours(kind, rest, None, index), **identity}
                if logprobs:
                    event["choices"][0]["logprobs"] = logprobs
                yield event
        yield {**_ours(kind, None, CONTENT_FILTER, index), **identity}


async def filtered_events(kind: Kind, detector, events: AsyncIterator[Any],
                          on_finish: Callable[[int, GuardedStream, str | None, bool], None],
                          logprobs: int | None = None) -> AsyncIterator[Any]:
    """An upstream's stream through the output filter, each choice on its own: its own events, each
    once the state machine has released its text (its logprobs' alternatives judged, `logprobs` of
    them kept); cut, the text before the violation and a finish event of ours, the upstream's rest
    of that choice and its usage event dropped. `on_finish(index, machine, finish_reason, several)` once the client
    has a choice's whole answer (`several`: the stream has more than one)."""
    choices: dict[int, _FilteredChoice] = {}
    trailing: list[dict] = []  # events of no choice (usage), sent once every choice is done
    head: dict = {}

    def finished(index: int, finish_reason: str | None) -> None:
        choices[index].done = True
        on_finish(index, choices[index].machine, finish_reason, len(choices) > 1)

    async for event in events:
        if not isinstance(event, dict):
            raise bad_gateway("a streamed event is not an object")
        head = head or event
        index, text, finish_reason = _piece(kind, event)
        if index is None:
            trailing.append(event)
            continue
        if index not in choices:
            machine = GuardedStream(detector)
            choices[index] = _FilteredChoice(machine, _Alternatives(kind, machine, logprobs))
        choice = choices[index]
        if choice.done:  # cut: the upstream's rest of it is not sent
            continue
        choice.held.append((event, len(choice.machine.text), len(choice.machine.text) + len(text)))
        step = choice.machine.feed(text, None, finish_reason)
        if step.finish_reason == CONTENT_FILTER:
            for out in choice.cut(kind, index, _identity(head)):
                yield out
            finished(index, CONTENT_FILTER)
            continue
        for out in choice.released():
            yield out
        if step.action == "finish":
            finished(index, finish_reason)
    for index, choice in choices.items():  # [DONE] without a finish reason: judged whole at the end
        if not choice.done:
            step = choice.machine.end()
            if step.finish_reason == CONTENT_FILTER:
                for out in choice.cut(kind, index, _identity(head)):
                    yield out
            else:
                for event, _, _ in choice.held:
                    yield choice.alternatives.judged_event(event)
            finished(index, step.finish_reason)
    if not any(choice.machine.violations for choice in choices.values()):
        for event in trailing:  # the usage event, if the client asked for one (cut, it counts what was not sent)
            yield event


def _identity(head: dict) -> dict:
    """The upstream stream's id, object, creation time and model, for an event of ours."""
    return {k: head[k] for k in ("id", "object", "created", "model") if k in head}


class _Alternatives:
    """The alternatives beside each token of an upstream's reply (OpenAI's logprobs shapes): those the
    machine would not release after the answer so far dropped, the client's `count` kept. Tokens past
    `upto` (the end of a cut answer's text) go with the text they wrote."""

    def __init__(self, kind: Kind, machine: GuardedStream, count: int | None):
        self.kind, self.machine, self.count, self.context = kind, machine, count, ""

    def judged_event(self, event: dict) -> dict:
        choices = event.get("choices") or []
        if not choices or not choices[0].get("logprobs"):
            return event
        return {**event, "choices": [{**choices[0], "logprobs": self.judged(choices[0]["logprobs"])}, *choices[1:]]}

    def judged(self, logprobs: dict, upto: int | None = None) -> dict:
        try:
            return self._chat(logprobs, upto) if self.kind == "chat" else self._text(logprobs, upto)
        except (KeyError, TypeError, AttributeError):
            raise bad_gateway("the reply's logprobs are not OpenAI's shape") from None

    def _released(self, token: str, upto: int | None) -> bool:
        return upto is None or len(self.context) + len(token) <= upto

    def _chat(self, logprobs: dict, upto: int | None) -> dict:
        kept = []
        for position in logprobs["content"] or []:
            if not self._released(position["token"], upto):
                break
            top = [t for t in position.get("top_logprobs") or [] if self.machine.would_release(self.context, t["token"])]
            kept.append({**position, "top_logprobs": top[:self.count]})
            self.context += position["token"]
        return {**logprobs, "content": kept}

    def _text(self, logprobs: dict, upto: int | None) -> dict:
        tokens, tops = logprobs["tokens"], []
        for token, top in zip(tokens, logprobs["top_logprobs"]):
            if not self._released(token, upto):
                break
            alternatives = [(t, lp) for t, lp in (top or {}).items()
                            if t != token and self.machine.would_release(self.context, t)]
            tops.append({**{t: lp for t, lp in top.items() if t == token}, **dict(alternatives[:self.count])}
                        if top else top)
            self.context += token
        return {**logprobs, **{key: logprobs[key][:len(tops)] for key in ("tokens", "token_logprobs", "text_offset")},
                "top_logprobs": tops}


def _ours(kind: Kind, text: str | None, finish_reason: str | None, index: int) -> dict:
    """An event of ours, for a stream whose id, object, creation time and model are the upstream's."""
    return responses.chunk(kind, "", "", text, finish_reason, index=index).model_dump(exclude_unset=True)


def _choices(reply: Any) -> list[dict]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices:
        raise bad_gateway("the reply has no choices")
    if not all(isinstance(choice, dict) for choice in choices):
        raise bad_gateway("the reply's choice is not an object")
    return choices


def _piece(kind: Kind, event: dict) -> tuple[int | None, str, str | None]:
    """The choice an upstream event is of (None: none, a usage event), the text it adds, and its finish reason."""
    choices = event.get("choices") or []
    if not choices:
        return None, "", None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise bad_gateway("a streamed choice is not an object")
    index = choice.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or len(choices) > 1:
        raise bad_gateway("a streamed event is not of one choice, with an integer index")
    delta = choice.get("delta") or {}
    text = delta.get("content") if kind == "chat" else choice.get("text")
    if text is not None and not isinstance(text, str):
        raise bad_gateway("a streamed text is not a string")
    arguments = _arguments(delta.get("tool_calls")) if kind == "chat" else ""
    return index, (text or "") + arguments, choice.get("finish_reason")


def _arguments(calls: Any) -> str:
    """The arguments of a reply's (or a delta's) tool calls, joined: text the filter reads as any other."""
    if calls is None:
        return ""
    try:
        arguments = [(call.get("function") or {}).get("arguments") or "" for call in calls]
    except (TypeError, AttributeError):
        raise bad_gateway("the reply's tool calls are not OpenAI's shape") from None
    if not all(isinstance(a, str) for a in arguments):
        raise bad_gateway("a tool call's arguments are not a string")
    return "".join(arguments)
