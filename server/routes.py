"""The OpenAI routes: chat and text completions (streamed and whole), models, health, metrics."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from guard.chat import render_chat
from guard.restriction import UNRESTRICTED, Restriction, Restrictions
from server import metrics
from server.audit import AuditLog
from server.engine import DecodeParams, EmbeddedEngine
from server.errors import OpenAIError, bad_request
from server.generation import Chunk, generate_guarded
from server.live_policy import LivePolicy
from server.protocol import (ChatCompletionRequest, CompletionRequest, chunk_choice, new_id, now, usage,
                             whole_choice)
from server.settings import Settings

router = APIRouter()
TARGETS_HEADER = "x-guard-targets"


@dataclass(frozen=True)
class ServedModel:
    engine: Any  # an EmbeddedEngine, or a LoraView of one
    guarded: bool
    root: str | None = None  # the variant's folder; None for the base model


@dataclass
class ServerState:
    settings: Settings
    engines: list[EmbeddedEngine]
    models: dict[str, ServedModel]  # every name in /v1/models
    policy: LivePolicy
    served_model: str  # the base model's name
    audit: AuditLog | None = None

    @property
    def restrictions(self) -> Restrictions:
        """What new requests are classified by; a request keeps the restriction it got."""
        return self.policy.restrictions


def _state(request: Request) -> ServerState:
    return request.app.state.guard


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    ok = all(engine.healthy for engine in state.engines)
    body = {"status": "ok" if ok else "unhealthy", "model": state.served_model, "models": list(state.models),
            "targets": len(state.restrictions.policy.targets), "policy_version": state.policy.enforced_version}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/v1/models")
async def models(request: Request) -> dict:
    state = _state(request)
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": now(), "owned_by": "guard", "guarded": served.guarded,
         "root": served.root or state.served_model, "parent": None if served.root is None else state.served_model}
        for name, served in state.models.items()
    ]}


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = _state(request)
    served = _served(state, body.model)
    messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in body.messages]
    try:
        prompt_ids = render_chat(served.engine.tokenizer, messages)
    except Exception as exc:  # a template that rejects the conversation (role order, ...)
        raise bad_request(f"messages: the model's chat template rejects them ({exc})", param="messages") from None
    asked = [m["content"] for m in messages if m["role"] in ("system", "user")]
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return await _complete(request, state, served, body, prompt_ids, ["\n".join(asked), last_user], "chat")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = _state(request)
    served = _served(state, body.model)
    if not body.prompt:
        raise bad_request("prompt: must not be empty", param="prompt")
    prompt_ids = served.engine.tokenizer.encode(body.prompt)
    return await _complete(request, state, served, body, prompt_ids, [body.prompt], "text")


def _served(state: ServerState, model: str) -> ServedModel:
    if model not in state.models:
        raise OpenAIError(404, f"The model `{model}` does not exist; this server serves "
                          f"{', '.join(f'`{name}`' for name in state.models)}.", param="model", code="model_not_found")
    return state.models[model]


async def _complete(request: Request, state: ServerState, served: ServedModel, body, prompt_ids: list[int],
                    views: list[str], kind: Literal["chat", "text"]) -> Response:
    """`views` of the conversation the classifier reads: the whole of it, then the last user turn.
    A plain variant (`served.guarded` False) answers without the guard: weight-level unlearning alone."""
    limit = served.engine.max_model_len
    room = limit - len(prompt_ids)
    if room <= 0:
        raise bad_request(f"This model's maximum context length is {limit} tokens; the prompt has "
                          f"{len(prompt_ids)}.", param="messages" if kind == "chat" else "prompt",
                          code="context_length_exceeded")
    max_tokens = body.token_limit or room
    if max_tokens > room:
        field = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise bad_request(f"{field}: {max_tokens} plus the prompt's {len(prompt_ids)} tokens exceeds the "
                          f"context length of {limit}", param=field, code="context_length_exceeded")
    restriction = classify(request, state.restrictions, views) if served.guarded else UNRESTRICTED
    params = DecodeParams(max_tokens, body.temperature, body.top_p, tuple(body.stop), body.seed)
    request_id = new_id("chatcmpl" if kind == "chat" else "cmpl")
    chunks = generate_guarded(served.engine, prompt_ids, params, request_id, restriction.detector,
                              restriction.spec, state.settings.max_rewinds)
    headers = {TARGETS_HEADER: ",".join(restriction.target_ids)}
    reply = _Reply(request_id, body.model, kind, len(prompt_ids))

    def on_finish(last: Chunk, answer: str) -> None:
        metrics.observe_finish(request.app.state.metrics, last, len(prompt_ids), restriction.target_ids)
        audit(request, state.audit, restriction, request_id, last.finish_reason, last.rewinds, views[0], answer)
    if body.stream:
        first = await _first_chunk(chunks)  # errors before the first byte become proper HTTP errors
        return StreamingResponse(_sse(reply, first, chunks, body.include_usage, on_finish), headers=headers,
                                 media_type="text/event-stream")
    try:
        async with asyncio.timeout(state.settings.max_request_seconds), aclosing(chunks):
            parts = [chunk async for chunk in chunks]
    except TimeoutError:
        raise OpenAIError(504, "generation timed out", type="server_error") from None
    text = "".join(p.text for p in parts)
    on_finish(parts[-1], text)
    return JSONResponse(reply.whole(text, parts[-1]), headers=headers)


def classify(request: Request, restrictions: Restrictions, views: list[str]) -> Restriction:
    """What the request is restricted by, timed and counted; failing closed: no answer without the
    guard's decision."""
    app_metrics = request.app.state.metrics
    try:
        with app_metrics.classifier.time():
            restriction = restrictions.for_conversation(views)
    except Exception as exc:
        raise OpenAIError(503, "the guard could not classify this request", type="server_error") from exc
    metrics.observe_restriction(app_metrics, restriction)
    return restriction


def audit(request: Request, log: AuditLog | None, restriction: Restriction, request_id: str,
          finish_reason: str | None, rewinds: int, prompt: str, answer: str) -> None:
    """An audit record for a restricted request (none for the plain path, or without an audit log),
    under the policy version the request was classified by."""
    if log is not None and restriction.target_ids:
        log.record(request_id=request_id, key_id=getattr(request.state, "key_id", "anonymous"),
                   target_ids=restriction.target_ids, policy_version=restriction.policy_version,
                   finish_reason=finish_reason, rewinds=rewinds, prompt=prompt, answer=answer)


async def _first_chunk(chunks: AsyncIterator[Chunk]) -> Chunk:
    try:
        return await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise


@dataclass(frozen=True)
class _Reply:
    id: str
    model: str
    kind: Literal["chat", "text"]
    prompt_tokens: int

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def whole(self, text: str, last: Chunk) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion" if self.kind == "chat" else "text_completion",
                "created": now(), "model": self.model, "choices": [whole_choice(self.kind, text, last.finish_reason)],
                "usage": usage(self.prompt_tokens, last.completion_tokens)}

    def piece(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict[str, Any]:
        return {"id": self.id, "object": self.chunk_object, "created": now(), "model": self.model,
                "choices": [chunk_choice(self.kind, text, finish_reason, role)]}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _sse(reply: _Reply, first: Chunk, chunks: AsyncIterator[Chunk], include_usage: bool,
               on_finish: Callable[[Chunk, str], None]) -> AsyncIterator[str]:
    async with aclosing(chunks):
        if reply.kind == "chat":
            yield _event(reply.piece("", None, role=True))
        chunk = first
        sent: list[str] = []
        try:
            while True:
                if chunk.text:
                    sent.append(chunk.text)
                    yield _event(reply.piece(chunk.text, None))
                if chunk.finish_reason is not None:
                    yield _event(reply.piece(None if reply.kind == "chat" else "", chunk.finish_reason))
                    on_finish(chunk, "".join(sent))
                    if include_usage:
                        yield _event({"id": reply.id, "object": reply.chunk_object, "created": now(),
                                      "model": reply.model, "choices": [],
                                      "usage": usage(reply.prompt_tokens, chunk.completion_tokens)})
                    break
                chunk = await anext(chunks)
        except OpenAIError as exc:  # after the headers went out: report in-band, then end the stream
            yield _event(exc.body())
        yield "data: [DONE]\n\n"
