"""`guard proxy`: the same HTTP API as `guard serve`, in front of an OpenAI-compatible server someone else runs.

The classifier and span extraction run here; how the restriction reaches the generation depends on
what the upstream allows, one enforcement level per upstream (reported in /health):
- full:   a `vllm serve` started with this project's logits processor. Requests go through
          `server.routes` exactly as in `guard serve`, with `server.upstream_engine.UpstreamEngine`
          as the engine: the token-level guard runs inside the upstream, rewinds run here.
- bias:   any upstream whose tokenizer is known: the request is forwarded as it is, plus a
          `logit_bias` against the entry tokens of the forbidden spans (guard.logit_bias);
- filter: any upstream: the request is forwarded as it is.
At the bias and filter levels every restricted answer goes through the streaming output filter
(server.output_filter), the last line; requests that touch no target pass through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from guard.restriction import Restriction, Restrictions
from server import metrics, routes
from server.audit import AuditLog
from server.app import assemble_app, build_restrictions, following, open_live_policy
from server.errors import OpenAIError
from server.live_policy import LivePolicy
from server.output_filter import CONTENT_FILTER, Piece, filter_leaks
from server.protocol import ChatCompletionRequest, CompletionRequest, chunk_choice, new_id, whole_choice
from server.routes import TARGETS_HEADER, ServedModel, ServerState
from server.settings import ProxySettings
from server.upstream import Upstream, bad_gateway

log = logging.getLogger("guard.proxy")
PROBE_ERROR = "guard: not valid JSON"  # what the plugin's validate_params answers to a broken spec


@dataclass
class ProxyState:
    settings: ProxySettings
    upstream: Upstream
    level: Literal["full", "bias", "filter"]
    model: str  # the upstream's (first) model
    policy: LivePolicy
    biases: Any = None  # guard.logit_bias.LogitBiases at the bias level
    audit: AuditLog | None = None

    @property
    def restrictions(self) -> Restrictions:
        return self.policy.restrictions


async def wait_for_models(upstream: Upstream, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            models = await upstream.get("/models")
            if models.get("data"):
                return models
            problem = "it lists no model"
        except OpenAIError as exc:
            problem = exc.message
        if time.monotonic() >= deadline:
            raise RuntimeError(f"--upstream {upstream.url}: not usable after {seconds:.0f} s ({problem})")
        await asyncio.sleep(1.0)


async def has_guard_plugin(upstream: Upstream, model: str) -> bool:
    """Whether the upstream runs the guard's logits processor: its parameter validation rejects a
    broken guard spec; any other server ignores `vllm_xargs` or rejects it differently."""
    probe = {"model": model, "prompt": "probe", "max_tokens": 1, "vllm_xargs": {"guard": "{"}}
    try:
        await upstream.post("/completions", probe)
    except OpenAIError as exc:
        return exc.status == 400 and PROBE_ERROR in exc.message
    return False


def choose_level(requested: str, plugin: bool, tokenizer: str | None) -> Literal["full", "bias", "filter"]:
    if requested == "auto":
        return "full" if plugin and tokenizer else "bias" if tokenizer else "filter"
    if requested in ("full", "bias") and not tokenizer:
        raise RuntimeError(f"--enforcement {requested} needs the upstream model's tokenizer: pass --tokenizer")
    if requested == "full" and not plugin:
        raise RuntimeError("--enforcement full: the upstream does not run the guard's logits processor "
                           "(start it with `vllm serve MODEL --logits-processors "
                           "guard.vllm_processor:GuardLogitsProcessor`)")
    return requested  # type: ignore[return-value]


def create_proxy_app(settings: ProxySettings) -> FastAPI:
    """Build the proxy; a bad policy raises ValueError here. The upstream is reached at start-up."""
    live = open_live_policy(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        upstream = Upstream(settings.upstream, settings.upstream_api_key, settings.upstream_timeout)
        try:
            listed = (await wait_for_models(upstream, settings.upstream_wait))["data"][0]
            model = listed["id"]
            tokenizer = settings.tokenizer or (model if Path(model).is_dir() else None)
            plugin = await has_guard_plugin(upstream, model)
            level = choose_level(settings.enforcement, plugin, tokenizer)
            await live.start(lambda policy, version: build_restrictions(
                settings, policy, tokenizer if level != "filter" else None, version))
            audit = AuditLog(settings.audit_log, settings.audit_text) if settings.audit_log else None
            state = ProxyState(settings, upstream, level, model, live, audit=audit)
            if level != "filter":
                from transformers import AutoTokenizer

                loaded = AutoTokenizer.from_pretrained(tokenizer)
                if level == "bias":
                    from guard.logit_bias import LogitBiases

                    state.biases = LogitBiases(loaded, settings.max_logit_bias)
                else:
                    from server.upstream_engine import UpstreamEngine

                    engine = UpstreamEngine(upstream, model, loaded, int(listed.get("max_model_len") or 2048))
                    app.state.guard = ServerState(settings, [engine], {model: ServedModel(engine, True)},
                                                  live, model, audit)
            app.state.proxy = state
            log.info("proxy in front of %s (%s): enforcement %s; guarding %d target(s)", settings.upstream, model,
                     level, len(live.restrictions.policy.targets))
            async with following(live):
                yield
        finally:
            await upstream.aclose()
            if getattr(app.state, "proxy", None) is not None and app.state.proxy.audit is not None:
                app.state.proxy.audit.close()

    return assemble_app("guard proxy", lifespan, settings, router, live)


router = APIRouter()


def _state(request: Request) -> ProxyState:
    return request.app.state.proxy


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    body = {"model": state.model, "upstream": state.settings.upstream, "enforcement": state.level,
            "targets": len(state.restrictions.policy.targets), "policy_version": state.policy.enforced_version}
    try:
        await state.upstream.get("/models")
    except OpenAIError as exc:
        return JSONResponse({"status": "unhealthy", **body, "problem": exc.message}, status_code=503)
    return JSONResponse({"status": "ok", **body})


@router.get("/v1/models")
async def models(request: Request) -> dict:
    return await _state(request).upstream.get("/models")


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    if _state(request).level == "full":
        return await routes.chat_completions(body, request)
    asked = [m.text() for m in body.messages if m.role in ("system", "developer", "user")]
    last_user = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    return await _relay(request, "chat", body, ["\n".join(asked), last_user])


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    if _state(request).level == "full":
        return await routes.completions(body, request)
    return await _relay(request, "text", body, [body.prompt])


# -- bias and filter levels ------------------------------------------------------------------------
async def _relay(request: Request, kind: Literal["chat", "text"], body, views: list[str]) -> Response:
    state = _state(request)
    raw = await request.json()  # forwarded as the client wrote it: unknown fields included
    path = "/chat/completions" if kind == "chat" else "/completions"
    restriction = routes.classify(request, state.restrictions, views)
    headers = {TARGETS_HEADER: ",".join(restriction.target_ids)}
    if restriction.detector is None:
        if body.stream:
            return await _stream_response(state.upstream, path, raw, lambda events: events, headers)
        return JSONResponse(await state.upstream.post(path, raw, state.settings.max_request_seconds), headers=headers)
    request_id = new_id("proxy")

    def on_finish(finish_reason: str, answer: str) -> None:
        metrics.observe_blocks(request.app.state.metrics, restriction.target_ids, 0, finish_reason)
        routes.audit(request, state.audit, restriction, request_id, finish_reason, 0, views[0], answer)
    guarded = _Guarded(state, kind, raw, restriction, body.include_usage, on_finish)
    if body.stream:
        return await _stream_response(state.upstream, path, guarded.upstream_body(), guarded.events, headers)
    return JSONResponse(await guarded.whole(path), headers=headers)


async def _stream_response(upstream: Upstream, path: str, body: dict, transform, headers: dict) -> Response:
    """Open the upstream stream before answering, so that its failure is a proper HTTP error; then
    relay `transform(events)` as server-sent events. A failure once streaming is reported in-band."""
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

    async def replay() -> AsyncIterator[dict]:
        yield first
        async for event in events:
            yield event

    async def sse() -> AsyncIterator[str]:
        async with stack:
            try:
                async for event in transform(replay()):
                    yield f"data: {json.dumps(event)}\n\n"
            except OpenAIError as exc:
                yield f"data: {json.dumps(exc.body())}\n\n"
            yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), headers=headers, media_type="text/event-stream")


class _Guarded:
    """One restricted request at the bias or filter level: forwarded streamed (whatever the client
    asked), its text run through the output filter, and answered in the client's shape."""

    def __init__(self, state: ProxyState, kind: str, raw: dict, restriction: Restriction, include_usage: bool,
                 on_finish: Callable[[str, str], None]):
        """`on_finish(finish_reason, answer)`: called once the client has the whole answer."""
        self.state, self.kind, self.raw, self.restriction = state, kind, raw, restriction
        self.include_usage, self.on_finish = include_usage, on_finish

    def upstream_body(self, strongest: bool = False) -> dict:
        body = {**self.raw, "stream": True, "stream_options": {"include_usage": True}}
        if self.state.biases is not None and self.restriction.spec is not None:
            guard_bias = self.state.biases.for_spec(self.restriction.spec, strongest)
            client_bias = {str(k): v for k, v in (self.raw.get("logit_bias") or {}).items()}
            body["logit_bias"] = {**client_bias, **{t: min(v, client_bias.get(t, 0.0)) for t, v in guard_bias.items()}}
        return body

    def _text(self, event: dict) -> str:
        choice = event["choices"][0]
        if self.kind == "chat":
            return (choice.get("delta") or {}).get("content") or ""
        return choice.get("text") or ""

    async def _pieces(self, events: AsyncIterator[dict], seen: dict) -> AsyncIterator[Piece]:
        async for event in events:
            seen.setdefault("head", event)
            if event.get("usage"):
                seen["usage"] = event["usage"]
            if event.get("choices"):
                yield Piece(self._text(event), event["choices"][0].get("finish_reason"))

    def _chunk(self, head: dict, text: str | None, finish_reason: str | None, role: bool = False) -> dict:
        return {**_identity(head), "choices": [chunk_choice(self.kind, text, finish_reason, role)]}

    async def events(self, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """The client's stream: the upstream's chunks with the filtered text."""
        seen: dict = {}
        sent: list[str] = []
        async for piece in filter_leaks(self._pieces(events, seen), self.restriction.detector):
            head = seen["head"]
            if not sent and self.kind == "chat":
                yield self._chunk(head, "", None, role=True)
            sent.append(piece.text)
            if piece.text:
                yield self._chunk(head, piece.text, None)
            if piece.finish_reason is not None:
                if piece.finish_reason != CONTENT_FILTER:  # read on to the usage event
                    async for _ in self._pieces(events, seen):
                        pass
                self.on_finish(piece.finish_reason, "".join(sent))
                yield self._chunk(head, None if self.kind == "chat" else "", piece.finish_reason)
                if self.include_usage and "usage" in seen:
                    yield {**_identity(head), "choices": [], "usage": seen["usage"]}

    async def whole(self, path: str) -> dict:
        """A whole answer; cut by the filter, it is asked once more fully biased if so configured."""
        answer = await self._whole_once(path, strongest=False)
        if (answer["choices"][0]["finish_reason"] == CONTENT_FILTER and self.state.settings.retry_on_leak
                and self.state.biases is not None):
            answer = await self._whole_once(path, strongest=True)
        choice = answer["choices"][0]
        self.on_finish(choice["finish_reason"], choice["message"]["content"] if self.kind == "chat" else choice["text"])
        return answer

    async def _whole_once(self, path: str, strongest: bool) -> dict:
        seen: dict = {}
        parts, finish = [], "stop"
        async with self.state.upstream.stream(path, self.upstream_body(strongest)) as events:
            async for piece in filter_leaks(self._pieces(events, seen), self.restriction.detector):
                parts.append(piece.text)
                finish = piece.finish_reason or finish
            if finish != CONTENT_FILTER:
                async for _ in self._pieces(events, seen):  # to the usage event
                    pass
        head = seen.get("head", {})
        whole = {"id": head.get("id"), "object": "chat.completion" if self.kind == "chat" else "text_completion",
                 "created": head.get("created"), "model": head.get("model"),
                 "choices": [whole_choice(self.kind, "".join(parts), finish)]}
        if "usage" in seen:
            whole["usage"] = seen["usage"]
        return whole


def _identity(event: dict) -> dict:
    """What each chunk of one upstream stream repeats: its id, object, creation time and model."""
    return {k: event[k] for k in ("id", "object", "created", "model") if k in event}
