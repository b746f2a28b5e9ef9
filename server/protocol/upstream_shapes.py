"""The OpenAI shapes `guard proxy` reads from its upstream, strictly.

An upstream's reply or streamed event is checked against one of these before anything reads it;
what does not fit is the upstream's fault, never the proxy's: a 502 `upstream_error` for a whole
answer, an error event and `[DONE]` once streaming (server.upstream.client raises, server.protocol.sse reports).
Only the fields the proxy reads are checked, strictly typed (a number is not a text); every other
field is allowed and relayed as the upstream wrote it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Index = Annotated[StrictInt, Field(ge=0)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Function(_Open):
    arguments: StrictStr | None = None


class ToolCall(_Open):
    function: Function | None = None


class Message(_Open):
    content: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Open):
    index: Index = 0
    finish_reason: StrictStr | None = None
    logprobs: dict | None = None


class ChatChoice(Choice):
    message: Message


class TextChoice(Choice):
    text: StrictStr | None = None


class ChatChunkChoice(Choice):
    delta: Message = Message()


class TokenChoice(TextChoice):
    token_ids: list[Annotated[StrictInt, Field(ge=0)]]


class ChatReply(_Open):
    choices: list[ChatChoice] = Field(min_length=1)


class TextReply(_Open):
    choices: list[TextChoice] = Field(min_length=1)


class ChatChunk(_Open):
    """A streamed event: one choice's piece, or none (the usage event)."""
    choices: list[ChatChunkChoice] = Field(max_length=1)


class TextChunk(_Open):
    choices: list[TextChoice] = Field(max_length=1)


class TokenChunk(_Open):
    """A completions event of a vLLM asked for `return_token_ids` (the full level)."""
    choices: list[TokenChoice] = Field(max_length=1)


def reply_shape(kind: Literal["chat", "text"]) -> type[BaseModel]:
    return ChatReply if kind == "chat" else TextReply


def event_shape(kind: Literal["chat", "text"]) -> type[BaseModel]:
    return ChatChunk if kind == "chat" else TextChunk
