"""OpenAI response shapes, typed: what `guard serve` (and `guard proxy` at its full level) answers.

The routes declare these as their response models, so the OpenAPI schema states every response,
errors and streams included, and the schema fuzzing checks the answers against it. Streams are
written by server.protocol.sse from the chunk models (fields set explicitly are written, null included).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.engine import PositionLogprobs

Kind = Literal["chat", "text"]
LOWEST_LOGPROB = -9999.0  # -inf, in JSON (as OpenAI and vLLM write it)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str | None = None  # a streamed call's later deltas carry only more arguments
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(BaseModel):
    """A streamed call's first delta names it (id, type, function name); later ones add arguments."""
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=lambda calls: calls is None)  # an answer of calls


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class TextLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: TextLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class Chunk(BaseModel):
    """One event of a stream, chat (`chat.completion.chunk`) or text (`text_completion`)."""
    id: str
    object: Literal["chat.completion.chunk", "text_completion"]
    created: int
    model: str
    choices: list[ChatChunkChoice] | list[TextChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    guarded: bool
    root: str
    parent: str | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")  # a proxy adds its upstream and enforcement level
    status: Literal["ok", "unhealthy"]
    model: str
    targets: int
    policy_version: int
    problem: str | None = None
    policy_error: str | None = None  # why the store's newest policy is not enforced (its database unreachable, ...)
    rate_limit_error: str | None = None  # why rate limits are counted by this replica alone (server.state.rate_limits)
    upstreams_failing: dict[str, str] | None = None  # a proxy: each upstream that does not answer now, and why


# -- building them -----------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def _logprob(value: float) -> float:
    return max(value, LOWEST_LOGPROB)


def _top(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _logprob(logprob), "bytes": list(token.encode("utf-8", errors="replace"))}


def logprobs(kind: Kind, positions: tuple[PositionLogprobs, ...] | None,
             text_offset: int = 0) -> ChatLogprobs | TextLogprobs | None:
    """OpenAI's logprobs of `positions` (None: none asked for). A text completion's start at
    `text_offset` (the length of the answer before them) and list the sampled token first, as vLLM does."""
    if positions is None:
        return None
    if kind == "chat":
        return ChatLogprobs(content=[
            TokenLogprob(**_top(p.sampled.token, p.sampled.logprob),
                         top_logprobs=[TopLogprob(**_top(t.token, t.logprob)) for t in p.top]) for p in positions])
    offsets = []
    for p in positions:
        offsets.append(text_offset)
        text_offset += len(p.sampled.token)
    return TextLogprobs(
        text_offset=offsets, tokens=[p.sampled.token for p in positions],
        token_logprobs=[_logprob(p.sampled.logprob) for p in positions],
        top_logprobs=[{t.token: _logprob(t.logprob) for t in (p.sampled, *p.top)} for p in positions])


def whole(kind: Kind, id: str, model: str, choices: list[tuple[str, str | None, Any]], used: Usage,
          readings: list[tuple[str | None, list[ToolCall]]] | None = None) -> BaseModel:
    """`choices`: each choice's (text, finish reason, logprobs); `readings`: each chat choice's text read
    as (content, tool calls), where tools may be called."""
    if kind == "chat":
        return ChatCompletion(id=id, created=now(), model=model, usage=used, choices=[
            ChatChoice(index=i, message=AssistantMessage(content=text) if readings is None else
                       AssistantMessage(content=readings[i][0], tool_calls=readings[i][1]), logprobs=lp,
                       finish_reason=finish)
            for i, (text, finish, lp) in enumerate(choices)])
    return Completion(id=id, created=now(), model=model, usage=used, choices=[
        TextChoice(index=i, text=text, logprobs=lp, finish_reason=finish)
        for i, (text, finish, lp) in enumerate(choices)])


def chunk(kind: Kind, id: str, model: str, text: str | None, finish_reason: str | None = None,
          role: bool = False, index: int = 0, logprobs: Any = None,
          tool_calls: list[ToolCallDelta] | None = None) -> Chunk:
    """A stream's event for choice `index`: `text` (None: none, in a chat's last event), `role`: a chat
    stream's first event, naming the assistant; `tool_calls`: a chat's tool-call deltas."""
    if kind == "chat":
        delta = ChatDelta(role="assistant") if role else ChatDelta()
        if text is not None:
            delta.content = text
        if tool_calls:
            delta.tool_calls = tool_calls
        choices: Any = [ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason)]
        return Chunk(id=id, object="chat.completion.chunk", created=now(), model=model, choices=choices)
    return Chunk(id=id, object="text_completion", created=now(), model=model,
                 choices=[TextChoice(index=index, text=text or "", logprobs=logprobs, finish_reason=finish_reason)])


def opening(kind: Kind, id: str, model: str, n: int) -> list[Chunk]:
    """A stream's first events, before any text: a chat's, naming the assistant, one per choice."""
    return [chunk(kind, id, model, "", role=True, index=index) for index in range(n)] if kind == "chat" else []


def usage_chunk(kind: Kind, id: str, model: str, used: Usage) -> Chunk:
    return Chunk(id=id, object="chat.completion.chunk" if kind == "chat" else "text_completion", created=now(),
                 model=model, choices=[], usage=used)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in {
        400: "Bad input: the message and `param` name the field", 401: "No or an unknown API key",
        403: "The key lacks the scope", 404: "Unknown model or target", 409: "The target exists",
        413: "The request body is too large", 429: "Over the rate limit", 500: "Internal error",
        502: "The upstream failed", 503: "The engine or the guard cannot run: the request fails closed",
        504: "The engine or the upstream did not answer in time"}.items()}
# A stream's events (OpenAPI before 3.2: `schema` describes each event): a `Chunk`, or the error a
# stream that fails ends with, then `[DONE]`.
STREAM = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"], "description": "server-sent events: `Chunk`s, then `data: [DONE]`",
    "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": "application/json",
         "contentSchema": {"anyOf": [{"$ref": "#/components/schemas/Chunk"},
                                     {"$ref": "#/components/schemas/ErrorResponse"}]}}]}}}}}


def stream_components() -> dict[str, Any]:
    """The schemas STREAM refers to, for the OpenAPI document's components."""
    schema = Chunk.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "Chunk": schema}
