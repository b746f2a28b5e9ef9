"""OpenAI protocol models: what a request may say, validated before anything runs.

Every field OpenAI's API defines is honoured, ignored by design (IGNORED: bookkeeping that changes
no answer, such as `user`), or refused with a 400 naming it (UNSUPPORTED, unless it asks for nothing,
e.g. `logprobs: false`). A field OpenAI does not define is refused where the answer is made here and
forwarded where an upstream makes it (`unknown_field`); never silently dropped.
Values out of range or of the wrong JSON type are 400 errors naming the field, as OpenAI's API
answers them: types are strict ("16" is not a max_tokens, 0 is not a `stream`). Every string of a request,
unknown fields included, must be valid Unicode: a lone surrogate (JSON's "\\ud800") can be neither
tokenized nor forwarded as UTF-8.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from guard.chat import render_chat
from guard.conversation import Conversation
from server.engine import DecodeParams
from server.protocol.errors import bad_request
from server.protocol.fields import (MAX_STOPS, MAX_TOOLS, Choices, LogitBias, NonEmpty, Penalty, Seed, Strict, TokenCount,
                           TopLogprobs, lone_surrogates, printable, refused)
from server.protocol.messages import ChatMessage, NamedToolChoice, ResponseFormat, Tool
from server.protocol.responses import Kind
from server.protocol.tool_calls import ModelFormatReader, ToolCallReader, named_grammar, required_grammar

Reader = ToolCallReader | ModelFormatReader

# Fields OpenAI defines that change no answer: accepted and ignored (`guard proxy` forwards them as given).
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})
# Fields OpenAI defines that this server does not honour, each with the values that ask for nothing.
UNSUPPORTED_CHAT = {
    "functions": (None, []), "function_call": (None, "none"), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "reasoning_effort": (None,), "verbosity": (None,), "web_search_options": (None,),
}
# best_of: vLLM's own server (this version) no longer has it either.
UNSUPPORTED_COMPLETION = {"best_of": (None, 1), "echo": (None, False), "suffix": (None, "")}


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # ignored by design: no padding is added to the events


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    _unsupported: ClassVar[dict[str, tuple]] = {}

    model: str = Field(min_length=1)
    max_tokens: TokenCount | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOPS)] | None = Field(
        default=None, validate_default=True)
    seed: Seed | None = None
    n: Choices = 1  # each choice generated and guarded on its own
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: Penalty = 0.0
    presence_penalty: Penalty = 0.0
    logit_bias: dict[str, LogitBias] | None = None  # token id (a decimal string) -> bias

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        errors = list(lone_surrogates(data))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @model_validator(mode="before")
    @classmethod
    def _unsupported_refused(cls, data: Any) -> Any:
        """A 400 for each field of OpenAI's API this server does not honour (unless it asks for nothing)."""
        if not isinstance(data, dict):
            return data
        errors = []
        for name, value in data.items():
            noops = cls._unsupported.get(name)
            if noops is None or any(value == noop and type(value) is type(noop) for noop in noops):
                continue
            errors.append(InitErrorDetails(type=PydanticCustomError(
                "field_refused", "is not supported by this server (only {noop} is accepted); see the README's "
                "request fields", {"noop": " or ".join(json.dumps(v) for v in noops)}),
                loc=(printable(str(name)),), input=value))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        if bias and not all(key.isascii() and key.isdigit() for key in bias):
            raise ValueError("keys must be token ids, written as decimal strings")
        return bias

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_shape(cls, stop: Any) -> Any:
        if stop is None or isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            if isinstance(stop, list) and len(stop) > MAX_STOPS:
                raise ValueError(f"at most {MAX_STOPS} stop sequences")
            return stop
        raise ValueError("must be a string, an array of strings, or null")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    def unknown_field(self) -> str | None:
        """The first field OpenAI's API does not define (vLLM's `top_k`, a typo): refused where the answer
        is made here (guard serve, the full proxy); the bias and filter proxies forward it to their upstream."""
        return next((name for name in self.model_extra or {} if name not in IGNORED and name not in self._unsupported),
                    None)

    kind: ClassVar[Kind]
    id_prefix: ClassVar[str]  # of the ids of its answers
    prompt_field: ClassVar[str]  # the field the prompt is in, for errors about its length

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def logprobs_count(self) -> int | None:
        """How many most likely tokens to list beside each token (None: no logprobs)."""
        raise NotImplementedError

    def decode_params(self, max_tokens: int) -> DecodeParams:
        return DecodeParams(max_tokens, self.temperature, self.top_p, tuple(self.stop), self.seed,
                            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty,
                            logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()),
                            logprobs=self.logprobs_count)


class ChatCompletionRequest(_Request):
    _unsupported: ClassVar[dict[str, tuple]] = UNSUPPORTED_CHAT
    kind: ClassVar[Kind] = "chat"
    id_prefix: ClassVar[str] = "chatcmpl"
    prompt_field: ClassVar[str] = "messages"
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> "ChatCompletionRequest":
        if self.top_logprobs and not self.logprobs:
            raise refused(type(self).__name__, ("top_logprobs",), "needs `logprobs: true`", self.top_logprobs,
                           "logprobs_needed")
        return self

    @model_validator(mode="after")
    def _tool_choice_possible(self) -> "ChatCompletionRequest":
        """The tools' names are distinct, a named choice names one of them, and a forced call is the whole
        answer. (`auto`, the default where tools are given, needs the server's tool-call parser: routes.)"""
        name, choice = type(self).__name__, self.tool_choice
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) < len(names):
            raise refused(name, ("tools",), "holds two functions of one name", names)
        if not self.tools:
            if choice not in (None, "none"):
                raise refused(name, ("tool_choice",), "needs `tools`", printable(str(choice)))
            return self
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise refused(name, ("tool_choice", "function", "name"), "names no function of `tools`",
                           choice.function.name)
        if self.calls_tools and self.response_format is not None and self.response_format.type != "text":
            raise refused(name, ("response_format",), "cannot be combined with a forced tool call: the answer is "
                           "the call's arguments", self.response_format.type)
        return self

    @property
    def forced_function(self) -> str | None:
        """The function a named tool choice forces (None: none, or `required`)."""
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else None

    @property
    def calls_tools(self) -> bool:
        """The answer is tool calls: `required`, or a named function."""
        return bool(self.tools) and self.tool_choice not in (None, "none", "auto")

    @property
    def model_calls_tools(self) -> bool:
        """`auto`: the model may call the tools, in its own format."""
        return bool(self.tools) and self.tool_choice in (None, "auto")

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template reads them (vLLM shows them to the template whatever the choice)."""
        return [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None

    def _grammar(self) -> str | None:
        if self.calls_tools:
            functions = {tool.function.name: tool.function.parameters for tool in self.tools or []}
            if (forced := self.forced_function) is not None:
                return named_grammar(functions[forced])
            return required_grammar(list(functions.items()), self.parallel_tool_calls)
        return self.response_format.grammar if self.response_format else None

    @property
    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def decode_params(self, max_tokens: int) -> DecodeParams:
        return dataclasses.replace(super().decode_params(max_tokens), json_schema=self._grammar())

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def token_limit_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def prompt_ids(self, tokenizer) -> list[int]:
        """The conversation rendered by the model's chat template (a 400 where it rejects them: role order, ...)."""
        try:
            return render_chat(tokenizer, [m.for_template() for m in self.messages], self.template_tools)
        except Exception as exc:  # noqa: BLE001 - a template raises what it likes
            raise bad_request(f"messages: the model's chat template rejects them ({exc})", param="messages") from None

    def tool_call_readers(self, parser: str | None, tokenizer) -> list[Reader] | None:
        """Each choice's reader of its answer (generated and guarded as any text) into tool calls: a forced
        call's JSON, or, with `auto`, the model's own format (vLLM's `parser` of it); None where no tool
        may be called."""
        if self.model_calls_tools and parser is None:
            raise bad_request("tool_choice: `auto` (the default where `tools` are given) needs the server started "
                              "with --tool-call-parser, to read the model's own tool-call format; give `required`, "
                              "a named function, or `none`", param="tool_choice")
        if self.calls_tools:
            return [ToolCallReader(self.forced_function) for _ in range(self.n)]
        if self.model_calls_tools:
            return [ModelFormatReader(parser, tokenizer, self.template_tools, self.parallel_tool_calls)
                    for _ in range(self.n)]
        return None

    def conversation(self) -> Conversation:
        """The messages as the guard reads them ("developer" is the newer name of "system")."""
        return Conversation.of((m.role if m.role != "developer" else "system", m.said()) for m in self.messages)


class CompletionRequest(_Request):
    _unsupported: ClassVar[dict[str, tuple]] = UNSUPPORTED_COMPLETION
    kind: ClassVar[Kind] = "text"
    id_prefix: ClassVar[str] = "cmpl"
    prompt_field: ClassVar[str] = "prompt"
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]
    max_tokens: TokenCount | None = 16
    logprobs: TopLogprobs | None = None

    @property
    def logprobs_count(self) -> int | None:
        return self.logprobs

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, prompt: Any) -> Any:
        if isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            if isinstance(prompt, list) and len(prompt) != 1:
                raise ValueError("exactly one prompt per request is supported")
            return prompt
        raise ValueError("must be a string or an array of one string (token-id prompts are not supported)")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str:
        return prompt[0] if isinstance(prompt, list) else prompt

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def token_limit_field(self) -> str:
        return "max_tokens"

    def prompt_ids(self, tokenizer) -> list[int]:
        if not self.prompt:
            raise bad_request("prompt: must not be empty", param="prompt")
        return tokenizer.encode(self.prompt)

    def tool_call_readers(self, parser: str | None, tokenizer) -> list[Reader] | None:
        return None

    def conversation(self) -> Conversation:
        return Conversation.of_prompt(self.prompt)
