"""OpenAI protocol models: what a request may say, validated before anything runs.

Unknown fields that OpenAI clients commonly send (user, logprobs, ...) are accepted and ignored;
values that are present but out of range or of the wrong JSON type are 400 errors naming the field,
as OpenAI's API answers them: types are strict ("16" is not a max_tokens, 0 is not a `stream`), so a
request is accepted exactly when it matches the published OpenAPI schema. Every string of a request,
unknown fields included, must be valid Unicode: a lone surrogate (JSON's "\\ud800") can be neither
tokenized nor forwarded as UTF-8.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterator, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from guard.conversation import Conversation

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a 64-bit signed integer, as vLLM's samplers take it
MAX_STOPS = 4
NonEmpty = Annotated[str, Field(min_length=1)]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 16.0 is an integer to JSON Schema, and so to this server."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds first, then the conversion around them: so the schema names them `minimum` and `maximum`.
TokenCount = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX), BeforeValidator(_whole_number)]
OnlyOne = Annotated[int, Field(ge=1, le=1, description="only n=1 is supported"), BeforeValidator(_whole_number)]


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


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    max_tokens: TokenCount | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOPS)] | None = Field(
        default=None, validate_default=True)
    seed: Seed | None = None
    n: OnlyOne = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        errors = list(_lone_surrogates(data))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

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

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ContentPart(BaseModel):
    """One part of a message's content: text, or another kind (image_url, ...) that is accepted and ignored."""
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> "ContentPart":
        if self.type == "text" and self.text is None:
            raise ValueError("a part of type `text` needs a `text` string")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, content: Any) -> Any:
        if content is None or isinstance(content, str) or (
                isinstance(content, list) and all(isinstance(part, dict) for part in content)):
            return content
        raise ValueError("must be a string, an array of content-part objects, or null")

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text parts carry meaning here
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conversation(self) -> Conversation:
        """The messages as the guard reads them ("developer" is the newer name of "system")."""
        return Conversation.of((m.role if m.role != "developer" else "system", m.text()) for m in self.messages)


class CompletionRequest(_Request):
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]
    max_tokens: TokenCount | None = 16

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
