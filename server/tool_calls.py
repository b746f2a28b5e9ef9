"""Forced tool calls: the JSON grammar a call is generated under, and the calls read back from the answer.

With `tool_choice` naming a function, the answer is that function's arguments: JSON of its
`parameters` schema. With `tool_choice: "required"`, it is a JSON array of one or more calls, each
`{"name": ..., "parameters": ...}`, the name one of the tools'. These are vLLM's own grammars for
the two cases (its JSON tool-call path), built alike here so that an answer the guard leaves alone
is vLLM's. The answer is generated and guarded as any JSON answer is (guard.grammar, the guarded
stream): the guard reads the arguments as it reads any text. Only then is it read into tool calls.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.responses import FunctionCall, ToolCall, ToolCallDelta


def _parameters(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A function's arguments are a JSON object, even where it declares no parameters."""
    return schema if schema else {"type": "object", "properties": {}}


def named_grammar(parameters: dict[str, Any] | None) -> str:
    """The grammar of one named function's arguments."""
    return json.dumps(_parameters(parameters))


def required_grammar(functions: list[tuple[str, dict[str, Any] | None]], parallel: bool | None) -> str:
    """The grammar of `required`: an array of calls of the given (name, parameters) functions; one call
    only when `parallel` is False. Each schema's `$defs` are gathered at the top, where references find them."""
    definitions: dict[str, Any] = {}
    calls = []
    for name, parameters in functions:
        parameters = dict(_parameters(parameters))
        definitions.update(parameters.pop("$defs", {}))
        calls.append({"properties": {"name": {"type": "string", "enum": [name]}, "parameters": parameters},
                      "required": ["name", "parameters"]})
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": calls}}
    if parallel is False:
        schema["maxItems"] = 1
    if definitions:
        schema["$defs"] = definitions
    return json.dumps(schema)


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _function_call(call: dict[str, Any]) -> FunctionCall:
    """One call of a `required` answer's array, its arguments written as vLLM writes them."""
    return FunctionCall(name=call["name"], arguments=json.dumps(call["parameters"], ensure_ascii=False))


@dataclass
class ToolCallReader:
    """Reads one choice's answer into tool calls: `function`, the named function whose arguments the
    answer is; None for `required`, whose answer is an array of calls."""
    function: str | None
    _text: str = ""
    _parsed_to: int = 0  # required, streamed: where the array's next call begins (0: before the "[")
    _calls: int = 0
    _id: str = field(default_factory=_call_id)

    @property
    def finish_reason_when_stopped(self) -> str:
        """OpenAI's finish reason of a call that ended well: `tool_calls`, but `stop` for a named function."""
        return "stop" if self.function is not None else "tool_calls"

    def whole(self, text: str) -> list[ToolCall]:
        """The calls of a whole answer (none where the answer was cut short of a whole call)."""
        if self.function is not None:
            return [ToolCall(id=self._id, function=FunctionCall(name=self.function, arguments=text))] if text else []
        try:
            calls = json.loads(text)
        except ValueError:
            return []
        return [ToolCall(id=_call_id(), function=_function_call(call)) for call in calls]

    def feed(self, text: str) -> list[ToolCallDelta]:
        """A streamed answer's next released text, as tool-call deltas. A named function's arguments
        stream as they come; the calls of `required` each go out whole, once the array holds them whole."""
        if self.function is not None:
            if not text:
                return []
            first, self._calls = self._calls == 0, 1
            return [ToolCallDelta(index=0, id=self._id, type="function",
                                  function=FunctionCall(name=self.function, arguments=text)) if first else
                    ToolCallDelta(index=0, function=FunctionCall(arguments=text))]
        self._text += text
        deltas = []
        while (call := self._next_call()) is not None:
            deltas.append(ToolCallDelta(index=self._calls, id=_call_id(), type="function", function=_function_call(call)))
            self._calls += 1
        return deltas

    def _next_call(self) -> dict | None:
        """The array's next call, once it is whole in the text (the grammar holds its shape)."""
        rest = self._text[self._parsed_to:].lstrip()
        start = len(self._text) - len(rest)
        if self._parsed_to == 0 or rest.startswith(","):
            if not rest or rest[0] not in "[,":
                return None
            rest = rest[1:].lstrip()
            start = len(self._text) - len(rest)
        try:
            call, end = json.JSONDecoder().raw_decode(self._text, start)
        except ValueError:
            return None
        self._parsed_to = end
        return call
