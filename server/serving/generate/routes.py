"""The OpenAI routes over engines: chat and text completions (streamed and whole), models, health,
metrics. `guard serve` serves them over its embedded engine; `guard proxy` at its full level over an
upstream vLLM (server.upstream.engine)."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from guard.chat import render_chat
from guard.conversation import Conversation
from guard.restriction import UNRESTRICTED, Restrictions
from server.ops import metrics
from server.protocol import responses
from server.state.audit import AuditLog
from server.serving.decisions import classify, record
from server.engine import DecodeParams, Engine
from server.protocol.errors import OpenAIError, bad_request
from server.serving.generate.generation import Chunk, generate_guarded
from server.state.live_policy import LivePolicy
from server.protocol.requests import ChatCompletionRequest, CompletionRequest
from server.protocol.responses import ERRORS, STREAM, Kind
from server.settings import GuardSettings
from server.protocol.sse import sse_response
from server.protocol.tool_calls import ModelFormatReader, ToolCallReader

router = APIRouter()
TARGETS_HEADER = "x-guard-targets"


@dataclass(frozen=True)
class ServedModel:
    engine: Engine
    guarded: bool
    root: str | None = None  # the variant's folder; None for the base model


HealthFields = Callable[[], Awaitable[dict[str, Any]]]


async def no_more_health() -> dict[str, Any]:
    return {}


@dataclass
class ServerState:
    settings: GuardSettings
    engines: list[Engine]  # every engine the app started
    models: dict[str, ServedModel]  # every name in /v1/models
    policy: LivePolicy
    served_model: str  # the base model's name
    audit: AuditLog | None = None
    health: HealthFields = no_more_health  # more for /health, asked at each call (a proxy: its upstreams, its level)

    @property
    def restrictions(self) -> Restrictions:
        """What new requests are classified by; a request keeps the restriction it got."""
        return self.policy.restrictions


def _state(request: Request) -> ServerState:
    return request.app.state.guard


@router.get("/health", response_model=responses.Health, responses={503: {"model": responses.Health}})
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    problems = [problem for engine in state.engines if (problem := await engine.health()) is not None]
    body = responses.Health(status="unhealthy" if problems else "ok", model=state.served_model,
                            targets=len(state.restrictions.policy.targets),
                            policy_version=state.policy.enforced_version, policy_error=state.policy.error,
                            rate_limit_error=request.app.state.rate_limiter.error,
                            problem=problems[0] if problems else None, models=list(state.models),
                            **await state.health())
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@router.get("/v1/models", response_model=responses.ModelList, responses=ERRORS)
async def models(request: Request) -> responses.ModelList:
    state = _state(request)
    return responses.ModelList(data=[
        responses.ModelCard(id=name, created=responses.now(), owned_by="guard", guarded=served.guarded,
                            root=served.root or state.served_model,
                            parent=None if served.root is None else state.served_model)
        for name, served in state.models.items()])


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def prometheus_metrics(request: Request) -> Response:
    return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)


COMPLETION_RESPONSES = {**ERRORS, 200: {"content": STREAM}}


@router.post("/v1/chat/completions", response_model=responses.ChatCompletion, responses=COMPLETION_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = _state(request)
    served = _served(state, body)
    if body.model_calls_tools and state.settings.tool_call_parser is None:
        raise bad_request("tool_choice: `auto` (the default where `tools` are given) needs the server started with "
                          "--tool-call-parser, to read the model's own tool-call format; give `required`, a named "
                          "function, or `none`", param="tool_choice")
    try:
        prompt_ids = await asyncio.to_thread(render_chat, served.engine.tokenizer, [m.for_template() for m in body.messages],
                                             body.template_tools)  # off the event loop: a long prompt takes seconds
    except Exception as exc:  # a template that rejects the conversation (role order, ...)
        raise bad_request(f"messages: the model's chat template rejects them ({exc})", param="messages") from None
    return await _complete(request, state, served, body, prompt_ids, body.conversation(), "chat")


@router.post("/v1/completions", response_model=responses.Completion, responses=COMPLETION_RESPONSES)
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = _state(request)
    served = _served(state, body)
    if not body.prompt:
        raise bad_request("prompt: must not be empty", param="prompt")
    prompt_ids = await asyncio.to_thread(served.engine.tokenizer.encode, body.prompt)
    return await _complete(request, state, served, body, prompt_ids, body.conversation(), "text")


def _served(state: ServerState, body: ChatCompletionRequest | CompletionRequest) -> ServedModel:
    """The model that answers `body`, whose fields are all ones this server honours or ignores by design."""
    if (unknown := body.unknown_field()) is not None:
        raise bad_request(f"{unknown}: is not a field this server honours (OpenAI's API defines no such field)",
                          param=unknown)
    model = body.model
    if model not in state.models:
        raise OpenAIError(404, f"The model `{model}` does not exist; this server serves "
                          f"{', '.join(f'`{name}`' for name in state.models)}.", param="model", code="model_not_found")
    return state.models[model]


async def _complete(request: Request, state: ServerState, served: ServedModel, body, prompt_ids: list[int],
                    conversation: Conversation, kind: Kind) -> Response:
    """A plain variant (`served.guarded` False) answers without the guard: weight-level unlearning alone."""
    readers = _tool_call_readers(state, served, body, kind)
    params = _decode_params(served, body, len(prompt_ids), kind, readers)
    restriction = await classify(request, state.restrictions, conversation) if served.guarded else UNRESTRICTED
    request_id = responses.new_id("chatcmpl" if kind == "chat" else "cmpl")
    # Each choice generated and guarded on its own; with a seed, choice i samples with seed + i, as vLLM's do.
    choices = [generate_guarded(served.engine, prompt_ids, params if i == 0 or params.seed is None else
                                dataclasses.replace(params, seed=params.seed + i), f"{request_id}-{i}",
                                restriction.detector, restriction.spec, state.settings.max_rewinds)
               for i in range(body.n)]
    headers = {TARGETS_HEADER: ",".join(restriction.target_ids)}

    def on_finish(index: int, last: Chunk, answer: str) -> None:
        record(request, state.audit, restriction, request_id if body.n == 1 else f"{request_id}-{index}",
               last.finish_reason, last.violations, conversation.asked, answer)

    def on_done(completion_tokens: int) -> None:
        metrics.observe_tokens(request.app.state.metrics, len(prompt_ids), completion_tokens)
    if body.stream:
        chunks = _merged(choices)
        first = await _first_chunk(chunks)  # errors before the first byte become proper HTTP errors
        events = _events(kind, request_id, body, len(prompt_ids), first, chunks, on_finish, on_done, readers)
        return sse_response(events, headers)
    answers: list[list[Chunk]] = [[] for _ in choices]
    try:
        async with asyncio.timeout(state.settings.max_request_seconds), aclosing(_merged(choices)) as chunks:
            async for index, chunk in chunks:
                answers[index].append(chunk)
    except TimeoutError:
        raise OpenAIError(504, "generation timed out", type="server_error") from None
    results, readings = [], [] if readers else None
    for index, parts in enumerate(answers):
        text, last = "".join(p.text for p in parts), parts[-1]
        on_finish(index, last, text)
        positions = tuple(lp for part in parts for lp in part.logprobs) if params.logprobs is not None else None
        finish_reason = last.finish_reason
        if readers:  # the text read as content and calls; a finish reason of tool calls, where it made any
            readings.append(readers[index].whole(text))
            finish_reason = readers[index].finish_reason(finish_reason)
        results.append((text, finish_reason, responses.logprobs(kind, positions)))
    completion_tokens = sum(parts[-1].completion_tokens for parts in answers)
    on_done(completion_tokens)
    answer = responses.whole(kind, request_id, body.model, results, responses.usage(len(prompt_ids), completion_tokens),
                             readings)
    return JSONResponse(answer.model_dump(), headers=headers)


Reader = ToolCallReader | ModelFormatReader


def _decode_params(served: ServedModel, body, prompt_tokens: int, kind: Kind,
                   readers: list[Reader] | None) -> DecodeParams:
    """The request's decoding parameters, checked against the model: its context, its vocabulary."""
    limit = served.engine.max_model_len
    room = limit - prompt_tokens
    if room <= 0:
        raise bad_request(f"This model's maximum context length is {limit} tokens; the prompt has "
                          f"{prompt_tokens}.", param="messages" if kind == "chat" else "prompt",
                          code="context_length_exceeded")
    max_tokens = body.token_limit or room
    if max_tokens > room:
        field_name = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise bad_request(f"{field_name}: {max_tokens} plus the prompt's {prompt_tokens} tokens exceeds the "
                          f"context length of {limit}", param=field_name, code="context_length_exceeded")
    params = body.decode_params(max_tokens)
    if readers and not readers[0].skip_special_tokens:
        params = dataclasses.replace(params, skip_special_tokens=False)
    if params.logit_bias:  # only then: the vocabulary's size is not free to ask for
        highest, vocabulary = max(token for token, _ in params.logit_bias), len(served.engine.tokenizer)
        if highest >= vocabulary:
            raise bad_request(f"logit_bias: token id {highest} is outside the model's vocabulary of {vocabulary}",
                              param="logit_bias")
    return params


def _tool_call_readers(state: ServerState, served: ServedModel, body, kind: Kind) -> list[Reader] | None:
    """Each choice's reader of its answer (generated and guarded as any text) into tool calls: a forced
    call's JSON, or, with `auto`, the model's own format; None where no tool may be called."""
    if kind != "chat" or not body.tools:
        return None
    if body.calls_tools:
        return [ToolCallReader(body.forced_function) for _ in range(body.n)]
    if body.model_calls_tools:
        return [ModelFormatReader(state.settings.tool_call_parser, served.engine.tokenizer, body.template_tools,
                                  body.parallel_tool_calls) for _ in range(body.n)]
    return None


async def _merged(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of several streams as they come, each with the index of its stream. A stream's
    failure is raised here; closing this (or that failure) closes them all."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async with aclosing(stream):
                async for chunk in stream:
                    await queue.put((index, chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the reader
            await queue.put((index, exc))
        await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first_chunk(chunks: AsyncIterator[tuple[int, Chunk]]) -> tuple[int, Chunk]:
    try:
        return await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise


async def _events(kind: Kind, request_id: str, body, prompt_tokens: int, first: tuple[int, Chunk],
                  chunks: AsyncIterator[tuple[int, Chunk]], on_finish, on_done,
                  readers: list[Reader] | None) -> AsyncIterator[responses.Chunk]:
    """The stream's events, from the first chunk on (server.protocol.sse writes them, and ends the stream);
    `readers`: each choice's tool-call reader, where the answers are tool calls."""
    model, n = body.model, body.n
    async with aclosing(chunks):
        if kind == "chat":
            for index in range(n):
                yield responses.chunk(kind, request_id, model, "", role=True, index=index)
        sent: list[list[str]] = [[] for _ in range(n)]
        offsets, completion_tokens, finished = [0] * n, 0, 0
        (index, chunk) = first
        while True:
            if chunk.text or chunk.logprobs:
                logprobs = responses.logprobs(kind, chunk.logprobs, offsets[index]) if chunk.logprobs else None
                sent[index].append(chunk.text)
                offsets[index] += sum(len(p.sampled.token) for p in chunk.logprobs)
                if readers is None:
                    yield responses.chunk(kind, request_id, model, chunk.text, index=index, logprobs=logprobs)
                elif (read := readers[index].feed(chunk.text)).content or read.calls or logprobs:
                    yield responses.chunk(kind, request_id, model, read.content, index=index, logprobs=logprobs,
                                          tool_calls=read.calls)
            if chunk.finish_reason is not None:
                finish_reason = chunk.finish_reason
                if readers is not None:
                    if (read := readers[index].finish()).content:
                        yield responses.chunk(kind, request_id, model, read.content, index=index)
                    finish_reason = readers[index].finish_reason(finish_reason)
                yield responses.chunk(kind, request_id, model, None if kind == "chat" else "", finish_reason,
                                      index=index)
                on_finish(index, chunk, "".join(sent[index]))
                completion_tokens += chunk.completion_tokens
                finished += 1
                if finished == n:
                    on_done(completion_tokens)
                    if body.include_usage:
                        yield responses.usage_chunk(kind, request_id, model,
                                                    responses.usage(prompt_tokens, completion_tokens))
                    return
            index, chunk = await anext(chunks)
