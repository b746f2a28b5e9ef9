"""The field types and checks every part of a request shares: whole numbers as JSON writes them,
valid Unicode everywhere, strict parts, and a 400 raised from a model's own validator."""

from __future__ import annotations

from typing import Annotated, Any, Iterator

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

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


def lone_surrogates(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[InitErrorDetails]:
    """An error for each string (or object key) under `value` that holds a lone surrogate."""
    if isinstance(value, str) and not _is_unicode(value):
        at = next(i for i, char in enumerate(value) if not _is_unicode(char))
        yield InitErrorDetails(type=PydanticCustomError(
            "string_unicode", "must be valid Unicode text; it holds a lone surrogate ({surrogate}) at position {at}",
            {"surrogate": ascii(value[at])[1:-1], "at": at}), loc=loc, input=printable(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            name = printable(str(key))  # the error's location must itself be encodable
            if isinstance(key, str) and not _is_unicode(key):
                yield from lone_surrogates(key, (*loc, name))
            yield from lone_surrogates(item, (*loc, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from lone_surrogates(item, (*loc, i))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


LogitBias = Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class Strict(BaseModel):
    """A part of a request whose fields are all known and strictly typed."""
    model_config = ConfigDict(extra="forbid", strict=True)


def refused(model: str, field: tuple[str | int, ...], message: str, value: Any, kind: str = "value_error"):
    """A 400 naming `field` (a dotted path), raised from a model's own validator."""
    return ValidationError.from_exception_data(model, [InitErrorDetails(
        type=PydanticCustomError(kind, message), loc=field, input=value)])
