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
from typing import Annotated, Any, ClassVar, Iterator, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from guard.conversation import Conversation
from guard.grammar import ANY_OBJECT, check_schema
from server.engine import DecodeParams
from server.tool_calls import named_grammar, required_grammar

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a 64-bit signed integer, as vLLM's samplers take it
MAX_STOPS = 4
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20  # OpenAI's limit, and vLLM's default --max-logprobs
MAX_TOOLS = 128  # OpenAI's limit
NonEmpty = Annotated[str, Field(min_length=1)]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 16.0 is an integer to JSON Schema, and so to this server."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds first, then the conversion around them: so the schema names them `minimum` and `maximum`.
TokenCount = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX), BeforeValidator(_whole_number)]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES), BeforeValidator(_whole_number)]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS), BeforeValidator(_whole_number)]


def _lone_surrogates(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[InitErrorDetails]:
    """An error for each string (or object key) under `value` that holds a lone surrogate."""
    if isinstance(value, str) and not _is_unicode(value):
        at = next(i for i, char in enumerate(value) if not _is_unicode(char))
        yield InitErrorDetails(type=PydanticCustomError(
            "string_unicode", "must be valid Unicode text; it holds a lone surrogate ({surrogate}) at position {at}",
            {"surrogate": ascii(value[at])[1:-1], "at": at}), loc=loc, input=_printable(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            name = _printable(str(key))  # the error's location must itself be encodable
            if isinstance(key, str) and not _is_unicode(key):
                yield from _lone_surrogates(key, (*loc, name))
            yield from _lone_surrogates(item, (*loc, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _lone_surrogates(item, (*loc, i))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# Fields OpenAI defines that change no answer: accepted and ignored (`guard proxy` forwards them as given).
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})
# Fields OpenAI defines that this server does not honour, each with the values that ask for nothing.
UNSUPPORTED_CHAT = {
    "functions": (None, []), "function_call": (None, "none"), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "reasoning_effort": (None,), "verbosity": (None,), "web_search_options": (None,),
}
# best_of: vLLM's own server (this version) no longer has it either.
UNSUPPORTED_COMPLETION = {"best_of": (None, 1), "echo": (None, False), "suffix": (None, "")}
LogitBias = Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    """A part of a request whose fields are all known and strictly typed."""
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
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
        errors = list(_lone_surrogates(data))
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
                loc=(_printable(str(name)),), input=value))
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


class JsonSchemaFormat(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None  # the grammar holds the answer to the schema either way


class ResponseFormat(_Strict):
    """`text`, `json_object` (any JSON object) or `json_schema` (JSON of that schema)."""
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_asked(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` is given with, and only with, type `json_schema`")
        if self.json_schema is not None:
            check_schema(json.dumps(self.json_schema.schema_))
        return self

    @property
    def grammar(self) -> str | None:
        """The JSON schema the answer must follow (guard.grammar), None for text."""
        if self.type == "json_object":
            return ANY_OBJECT
        return json.dumps(self.json_schema.schema_) if self.json_schema is not None else None


FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _refused(model: str, field: tuple[str | int, ...], message: str, value: Any, kind: str = "value_error"):
    """A 400 naming `field` (a dotted path), raised from a model's own validator."""
    return ValidationError.from_exception_data(model, [InitErrorDetails(
        type=PydanticCustomError(kind, message), loc=field, input=value)])


class FunctionDefinition(_Strict):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments (an object)
    strict: bool | None = None  # the grammar holds the arguments to the schema either way

    @field_validator("parameters")
    @classmethod
    def _a_schema(cls, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
        if parameters:
            check_schema(named_grammar(parameters))
        return parameters


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(_Strict):
    name: FunctionName


class NamedToolChoice(_Strict):
    """`{"type": "function", "function": {"name": ...}}`: the answer is a call of that function."""
    type: Literal["function"]
    function: ChosenFunction


class FunctionCallMade(_Strict):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCallMade(_Strict):
    """A tool call an earlier assistant turn made (OpenAI's shape), shown to the model's chat template."""
    id: str
    type: Literal["function"]
    function: FunctionCallMade


class ContentPart(BaseModel):
    """One part of a message's content: text. Other kinds (image_url, input_audio, file) are refused:
    the models served here read text, and the guard cannot read what it would have to judge."""
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> "ContentPart":
        if self.type != "text":
            raise ValueError(f"only parts of type `text` are supported, not {self.type!r}")
        if self.text is None:
            raise ValueError("a part of type `text` needs a `text` string")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallMade] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, content: Any) -> Any:
        if content is None or isinstance(content, str) or (
                isinstance(content, list) and all(isinstance(part, dict) for part in content)):
            return content
        raise ValueError("must be a string, an array of content-part objects, or null")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""

    def said(self) -> str:
        """What the turn says, as the guard reads it: its text, and the calls it made with their arguments."""
        calls = [f"{call.function.name}({call.function.arguments})" for call in self.tool_calls or []]
        return "\n".join([self.text(), *calls]) if calls else self.text()

    def for_template(self) -> dict[str, Any]:
        """The turn as chat templates read it: a call's arguments as an object where they are JSON, as vLLM gives them."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function", "function": {
                "name": call.function.name, "arguments": _json_or_text(call.function.arguments)}}
                for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            message["name"] = self.name
        return message


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class ChatCompletionRequest(_Request):
    _unsupported: ClassVar[dict[str, tuple]] = UNSUPPORTED_CHAT
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
            raise _refused(type(self).__name__, ("top_logprobs",), "needs `logprobs: true`", self.top_logprobs,
                           "logprobs_needed")
        return self

    @model_validator(mode="after")
    def _tool_choice_possible(self) -> "ChatCompletionRequest":
        """The tools' names are distinct, a named choice names one of them, and a forced call is the whole
        answer. (`auto`, the default where tools are given, needs the server's tool-call parser: routes.)"""
        name, choice = type(self).__name__, self.tool_choice
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) < len(names):
            raise _refused(name, ("tools",), "holds two functions of one name", names)
        if not self.tools:
            if choice not in (None, "none"):
                raise _refused(name, ("tool_choice",), "needs `tools`", _printable(str(choice)))
            return self
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise _refused(name, ("tool_choice", "function", "name"), "names no function of `tools`",
                           choice.function.name)
        if self.calls_tools and self.response_format is not None and self.response_format.type != "text":
            raise _refused(name, ("response_format",), "cannot be combined with a forced tool call: the answer is "
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

    def conversation(self) -> Conversation:
        """The messages as the guard reads them ("developer" is the newer name of "system")."""
        return Conversation.of((m.role if m.role != "developer" else "system", m.said()) for m in self.messages)


class CompletionRequest(_Request):
    _unsupported: ClassVar[dict[str, tuple]] = UNSUPPORTED_COMPLETION
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

    def conversation(self) -> Conversation:
        return Conversation.of_prompt(self.prompt)
