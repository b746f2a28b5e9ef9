"""Tool calls: the JSON grammar a forced call is generated under, and the calls read back from an answer.

With `tool_choice` naming a function, the answer is that function's arguments: JSON of its
`parameters` schema. With `tool_choice: "required"`, it is a JSON array of one or more calls, each
`{"name": ..., "parameters": ...}`, the name one of the tools'. These are vLLM's own grammars for
the two cases (its JSON tool-call path), built alike here so that an answer the guard leaves alone
is vLLM's. The answer is generated and guarded as any JSON answer is (guard.grammar, the guarded
stream): the guard reads the arguments as it reads any text. Only then is it read into tool calls.

With `tool_choice: "auto"` (the default where tools are given) the model answers freely and may write
calls in its own format (Hermes' `<tool_call>{...}</tool_call>`, Llama's JSON, ...). The answer is
guarded as any text, markup and arguments alike, and then read by vLLM's own parser of that format,
the one `vllm serve --tool-call-parser NAME` would use.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from server.protocol.responses import FunctionCall, ToolCall, ToolCallDelta


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


class Reading(NamedTuple):
    """What an answer (or a streamed piece of one) says: its content, and its calls (whole: ToolCall,
    streamed: ToolCallDelta)."""
    content: str | None
    calls: list


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

    skip_special_tokens = True

    def finish_reason(self, reason: str | None) -> str | None:
        """OpenAI's finish reason of a call that ended well: `tool_calls`, but `stop` for a named function."""
        if reason != "stop":
            return reason
        return "stop" if self.function is not None else "tool_calls"

    def whole(self, text: str) -> Reading:
        """The calls of a whole answer (none where the answer was cut short of a whole call)."""
        if self.function is not None:
            return Reading(None, [ToolCall(id=self._id, function=FunctionCall(name=self.function, arguments=text))]
                           if text else [])
        try:
            calls = json.loads(text)
        except ValueError:
            return Reading(None, [])
        return Reading(None, [ToolCall(id=_call_id(), function=_function_call(call)) for call in calls])

    def feed(self, text: str) -> Reading:
        """A streamed answer's next released text, as tool-call deltas. A named function's arguments
        stream as they come; the calls of `required` each go out whole, once the array holds them whole."""
        if self.function is not None:
            if not text:
                return Reading(None, [])
            first, self._calls = self._calls == 0, 1
            return Reading(None, [ToolCallDelta(index=0, id=self._id, type="function",
                                                function=FunctionCall(name=self.function, arguments=text)) if first
                                  else ToolCallDelta(index=0, function=FunctionCall(arguments=text))])
        self._text += text
        deltas = []
        while (call := self._next_call()) is not None:
            deltas.append(ToolCallDelta(index=self._calls, id=_call_id(), type="function", function=_function_call(call)))
            self._calls += 1
        return Reading(None, deltas)

    def finish(self) -> Reading:
        return Reading(None, [])

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


class ModelFormatReader:
    """`auto`: reads one choice's answer with vLLM's parser of the model's tool-call format (`parser`,
    as `vllm serve --tool-call-parser` names it). What is not a call is content. With `parallel` False,
    only the first call is kept, as vLLM keeps it."""

    def __init__(self, parser: str, tokenizer, tools: list[dict[str, Any]], parallel: bool | None):
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        self._request = ChatCompletionRequest(model="", messages=[], tools=tools, tool_choice="auto")
        self._parser = ToolParserManager.get_tool_parser(parser)(tokenizer, self._request.tools)
        # The parser's own adjustment: a format whose markers are special tokens needs them in the text.
        self.skip_special_tokens = self._parser.adjust_request(self._request).skip_special_tokens
        self._tokenizer, self._parallel = tokenizer, parallel
        self._text, self._token_ids, self._content, self._called = "", [], "", False

    def finish_reason(self, reason: str | None) -> str | None:
        return "tool_calls" if self._called and reason == "stop" else reason

    def whole(self, text: str) -> Reading:
        read = self._parser.extract_tool_calls(text, self._request)
        calls = [ToolCall(id=call.id or _call_id(), function=FunctionCall(name=call.function.name,
                                                                          arguments=call.function.arguments))
                 for call in read.tool_calls] if read.tools_called else []
        calls = calls[:1] if self._parallel is False else calls
        self._called = bool(calls)
        return Reading(read.content, calls)

    def feed(self, text: str) -> Reading:
        """The next released text: the content it completes, and the calls' deltas, as vLLM streams them."""
        previous, previous_ids = self._text, self._token_ids
        delta_ids = self._tokenizer.encode(text, add_special_tokens=False) if text else []
        self._text, self._token_ids = previous + text, previous_ids + delta_ids
        message = self._parser.extract_tool_calls_streaming(previous, self._text, text, previous_ids,
                                                            self._token_ids, delta_ids, self._request)
        if message is None:
            return Reading(None, [])
        deltas = [_delta(call) for call in message.tool_calls if not (self._parallel is False and call.index > 0)]
        self._content += message.content or ""
        self._called = self._called or bool(deltas)
        return Reading(message.content or None, deltas)

    def finish(self) -> Reading:
        """The content a parser held back at the stream's end, waiting for a call's marker that never came."""
        if self._called or not self._text.startswith(self._content):
            return Reading(None, [])
        return Reading(self._text[len(self._content):] or None, [])


def _delta(call) -> ToolCallDelta:
    """A vLLM streamed call delta as this server's."""
    function = call.function
    return ToolCallDelta(index=call.index, id=call.id, type=call.type,
                         function=FunctionCall(name=function.name if function else None,
                                               arguments=(function.arguments if function else None) or ""))
