"""`guard proxy` at the bias and filter levels: requests relayed to an upstream that runs none of our code.

The request goes on as the client wrote it (unknown fields included), plus, at the bias level, a
`logit_bias` against the entry tokens of the forbidden spans (guard.logit_bias). Every answer then
passes the guarded-text state machine (guard.guarded_stream) as the output filter: the upstream
gives text, not tokens, so a violation cannot be rewound and is cut before (`content_filter`).
- streamed: the upstream's own events go out as they are, each once the machine has released its
  text (nothing undecided is sent, nothing sent is taken back); a cut ends the stream with the text
  before the violation and a finish event of ours;
- whole: the upstream's own reply, judged whole; cut, its text ends before the violation (with
  `--retry-on-leak` at the bias level, the question is first asked again with every entry at -100).
Logprobs pass the same filter: an alternative the machine would not release after the answer so far
is dropped (the upstream is asked for a few spare ones, so the client keeps its count), and a cut
answer ends with the last whole token they list. Only a policy with nothing to enforce on a request
leaves it untouched.
"""

from __future__ import annotations

from collections import deque
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from guard.guarded_stream import CONTENT_FILTER, GuardedStream
from guard.restriction import Restriction, Restrictions
from server import metrics, responses
from server.app import assemble_app, build_restrictions, following
from server.audit import AuditLog
from server.decisions import classify, record
from server.engine import EngineError
from server.errors import bad_request
from server.generation import MAX_LOGPROBS, SPARE_ALTERNATIVES
from server.live_policy import LivePolicy
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.responses import ERRORS, STREAM, Kind
from server.routes import TARGETS_HEADER
from server.settings import ProxySettings
from server.sse import sse_response
from server.upstream import Upstream, bad_gateway


@dataclass
class RelayState:
    settings: ProxySettings
    upstream: Upstream
    level: str  # "bias" or "filter"
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
        upstream = Upstream(settings.upstream, settings.upstream_api_key, settings.upstream_timeout)
        audit = AuditLog(settings.audit_log, settings.audit_text) if settings.audit_log else None
        try:
            await live.start(lambda policy, version: build_restrictions(
                settings, policy, found.tokenizer if found.level == "bias" else None, version))
            state = RelayState(settings, upstream, found.level, found.model, live, audit=audit)
            if found.level == "bias":
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
    body = dict(model=state.model, upstream=state.settings.upstream, enforcement=state.level,
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
    for field, asked in (("n", body.n > 1), ("tool_choice", kind == "chat" and body.calls_tools)):
        if asked:  # the output filter reads the text of one choice; it could not guard more
            raise bad_request(f"{field}: is not supported at the {state.level} enforcement level (the output "
                              "filter reads one choice's text); `guard proxy --enforcement full` supports it",
                              param=field)
    raw = await request.json()  # forwarded as the client wrote it: unknown fields included
    path = "/chat/completions" if kind == "chat" else "/completions"
    conversation = body.conversation()
    restriction = classify(request, state.restrictions, conversation)
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

    def _finished(self, machine: GuardedStream, finish_reason: str | None) -> None:
        record(self.request, self.state.audit, self.restriction, self.id, finish_reason, tuple(machine.violations),
               self.prompt, machine.text)

    def events(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The client's stream."""
        if self.restriction.detector is None:
            return events
        return filtered_events(self.kind, self.restriction.detector, events, self._finished, self.logprobs)

    async def whole(self, path: str, raw: dict) -> dict:
        """A whole answer, judged whole; cut by the filter, it is asked once more fully biased if so configured."""
        reply, machine = await self._judged(path, raw, strongest=False)
        if (machine is not None and machine.violations and self.state.settings.retry_on_leak
                and self.state.biases is not None and self.restriction.spec is not None):
            reply, machine = await self._judged(path, raw, strongest=True)
        if machine is not None:
            self._finished(machine, _choice0(reply)["finish_reason"])
        return reply

    async def _judged(self, path: str, raw: dict, strongest: bool) -> tuple[dict, GuardedStream | None]:
        """The upstream's reply, cut before a violation; and the machine that judged it (None: nothing to guard)."""
        reply = await self.state.upstream.post(path, self.upstream_body(raw, strongest),
                                               self.state.settings.max_request_seconds)
        if self.restriction.detector is None:
            return reply, None
        choice = _choice0(reply)
        text = (choice.get("message") or {}).get("content") if self.kind == "chat" else choice.get("text")
        if text is not None and not isinstance(text, str):
            raise bad_gateway("the reply's text is not a string")
        machine = GuardedStream(self.restriction.detector)
        cut = machine.feed(text or "", None, choice.get("finish_reason") or "stop").finish_reason == CONTENT_FILTER
        kept = machine.text
        if choice.get("logprobs"):  # cut, the answer ends with the last whole token its logprobs list
            alternatives = _Alternatives(self.kind, machine, self.logprobs)
            choice = {**choice, "logprobs": alternatives.judged(choice["logprobs"], len(kept) if cut else None)}
            kept = alternatives.context
        if cut:
            if self.kind == "chat":
                choice = {**choice, "message": {**choice["message"], "content": kept}}
            else:
                choice = {**choice, "text": kept}
            choice = {**choice, "finish_reason": CONTENT_FILTER}
        return {**reply, "choices": [choice, *reply["choices"][1:]]}, machine


async def filtered_events(kind: Kind, detector, events: AsyncIterator[Any],
                          on_finish: Callable[[GuardedStream, str | None], None],
                          logprobs: int | None = None) -> AsyncIterator[Any]:
    """An upstream's stream through the output filter: its own events, each once the state machine
    has released its text (its logprobs' alternatives judged, `logprobs` of them kept); cut, the text
    before the violation and a finish event of ours. `on_finish(machine, finish_reason)` once the
    client has the whole answer."""
    machine = GuardedStream(detector)
    alternatives = _Alternatives(kind, machine, logprobs)
    held: deque[tuple[dict, int, int]] = deque()  # events not sent yet, with the text offsets of each
    head: dict = {}
    async for event in events:
        if not isinstance(event, dict):
            raise bad_gateway("a streamed event is not an object")
        head = head or event
        text, finish_reason = _piece(kind, event)
        held.append((event, len(machine.text), len(machine.text) + len(text)))
        step = machine.feed(text, None, finish_reason)
        if step.finish_reason == CONTENT_FILTER:
            break
        while held and held[0][2] <= machine.sent:
            yield alternatives.judged_event(held.popleft()[0])
        if step.action == "finish":
            on_finish(machine, finish_reason)
            async for rest in events:  # the usage event, if the client asked for one
                yield rest
            return
    else:
        step = machine.end()  # [DONE] without a finish reason
        if step.finish_reason != CONTENT_FILTER:
            for event, _, _ in held:
                yield alternatives.judged_event(event)
            on_finish(machine, step.finish_reason)
            return
    while held and held[0][2] <= len(machine.text):  # cut: what was wholly before the violation ...
        yield alternatives.judged_event(held.popleft()[0])
    identity = {k: head[k] for k in ("id", "object", "created", "model") if k in head}
    if held and machine.text[held[0][1]:]:  # ... the rest of the text before it, and the end
        rest, logprobs = machine.text[held[0][1]:], held[0][0]["choices"][0].get("logprobs")
        if logprobs:  # only the whole tokens its logprobs list
            before = len(alternatives.context)
            logprobs = alternatives.judged(logprobs, len(machine.text))
            rest = alternatives.context[before:]
        if rest:
            event = {**_ours(kind, rest, None), **identity}
            if logprobs:
                event["choices"][0]["logprobs"] = logprobs
            yield event
    yield {**_ours(kind, None, CONTENT_FILTER), **identity}
    on_finish(machine, CONTENT_FILTER)


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


def _ours(kind: Kind, text: str | None, finish_reason: str | None) -> dict:
    """An event of ours, for a stream whose id, object, creation time and model are the upstream's."""
    return responses.chunk(kind, "", "", text, finish_reason).model_dump(exclude_unset=True)


def _choice0(reply: Any) -> dict:
    try:
        choice = reply["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise bad_gateway("the reply has no choices") from None
    if not isinstance(choice, dict):
        raise bad_gateway("the reply's choice is not an object")
    return choice


def _piece(kind: Kind, event: dict) -> tuple[str, str | None]:
    """The text an upstream event adds to choice 0, and its finish reason (usage-only events: none)."""
    choices = event.get("choices") or []
    if not choices:
        return "", None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise bad_gateway("a streamed choice is not an object")
    text = (choice.get("delta") or {}).get("content") if kind == "chat" else choice.get("text")
    if text is not None and not isinstance(text, str):
        raise bad_gateway("a streamed text is not a string")
    return text or "", choice.get("finish_reason")
