"""The parts of a chat request: its messages (text parts, earlier tool calls), its tools and tool
choice, and the answer's format (text, any JSON object, or JSON of a schema)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.grammar import ANY_OBJECT, check_schema
from server.protocol.fields import Strict
from server.protocol.tool_calls import named_grammar

class JsonSchemaFormat(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None  # the grammar holds the answer to the schema either way


class ResponseFormat(Strict):
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


class FunctionDefinition(Strict):
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


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(Strict):
    name: FunctionName


class NamedToolChoice(Strict):
    """`{"type": "function", "function": {"name": ...}}`: the answer is a call of that function."""
    type: Literal["function"]
    function: ChosenFunction


class FunctionCallMade(Strict):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCallMade(Strict):
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
