"""The output filter over an upstream's OpenAI-shaped answers (the bias and filter levels of
`guard proxy`, server.serving.relay.relay): each choice through the guarded-text state machine (guard.guarded_stream),
whole or streamed; its tool calls' arguments read as text after its content, its logprobs'
alternatives judged as the machine would release them. Replies reach it checked against OpenAI's
shapes (server.protocol.upstream_shapes); logprobs that are not OpenAI's shape are a 502 (server.upstream.client.bad_gateway).

A piece of text longer than LARGE_PIECE is judged in a worker thread, so that no scan holds the event
loop, and with it every other request, for long."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

from guard.guarded_stream import CONTENT_FILTER, GuardedStream
from server.protocol import responses
from server.protocol.responses import Kind
from server.upstream.client import bad_gateway

LARGE_PIECE = 4096  # characters


def judged_choice(kind: Kind, detector, choice: dict, logprobs: int | None) -> tuple[dict, GuardedStream]:
    """A whole reply's choice, cut before a violation (its text, calls and logprobs); and the machine
    that judged it."""
    text = choice["message"].get("content") if kind == "chat" else choice.get("text")
    calls = _arguments(choice["message"].get("tool_calls")) if kind == "chat" else ""
    machine = GuardedStream(detector)
    finish_reason = None if calls else choice.get("finish_reason") or "stop"
    cut = machine.feed(text or "", None, finish_reason).finish_reason == CONTENT_FILTER
    if calls and not cut:  # the calls' arguments are read after the text: a leak in them drops every call
        cut = machine.feed(calls, None, choice.get("finish_reason") or "stop").finish_reason == CONTENT_FILTER
    kept = machine.text[:len(text or "")]
    if choice.get("logprobs"):  # cut, the answer ends with the last whole token its logprobs list
        alternatives = _Alternatives(kind, machine, logprobs)
        choice = {**choice, "logprobs": alternatives.judged(choice["logprobs"], len(kept) if cut else None)}
        kept = alternatives.context
    if cut:
        if kind == "chat":
            choice = {**choice, "message": {**choice["message"], "content": kept, "tool_calls": []}}
        else:
            choice = {**choice, "text": kept}
        choice = {**choice, "finish_reason": CONTENT_FILTER}
    return choice, machine


@dataclass
class _FilteredChoice:
    """One choice of a stream through the output filter: its machine, and its events not sent yet."""
    machine: GuardedStream
    alternatives: "_Alternatives"
    held: deque[tuple[dict, int, int]] = field(default_factory=deque)  # each with the text offsets it spans
    done: bool = False

    def released(self) -> Iterator[dict]:
        while self.held and self.held[0][2] <= self.machine.sent:
            yield self.alternatives.judged_event(self.held.popleft()[0])

    def cut(self, kind: Kind, index: int, identity: dict) -> Iterator[dict]:
        """Cut: the events wholly before the violation, the rest of the text before it, and the end."""
        text = self.machine.text
        while self.held and self.held[0][2] <= len(text):
            yield self.alternatives.judged_event(self.held.popleft()[0])
        if self.held and text[self.held[0][1]:] and not self.held[0][0]["choices"][0].get("delta", {}).get("tool_calls"):
            rest, logprobs = text[self.held[0][1]:], self.held[0][0]["choices"][0].get("logprobs")
            if logprobs:  # only the whole tokens its logprobs list
                before = len(self.alternatives.context)
                logprobs = self.alternatives.judged(logprobs, len(text))
                rest = self.alternatives.context[before:]
            if rest:
                event = {**_ours(kind, rest, None, index), **identity}
                if logprobs:
                    event["choices"][0]["logprobs"] = logprobs
                yield event
        yield {**_ours(kind, None, CONTENT_FILTER, index), **identity}


async def filtered_events(kind: Kind, detector, events: AsyncIterator[Any],
                          on_finish: Callable[[int, GuardedStream, str | None, bool], None],
                          logprobs: int | None = None) -> AsyncIterator[Any]:
    """An upstream's stream through the output filter, each choice on its own: its own events, each
    once the state machine has released its text (its logprobs' alternatives judged, `logprobs` of
    them kept); cut, the text before the violation and a finish event of ours, the upstream's rest
    of that choice and its usage event dropped. `on_finish(index, machine, finish_reason, several)` once the client
    has a choice's whole answer (`several`: the stream has more than one)."""
    choices: dict[int, _FilteredChoice] = {}
    trailing: list[dict] = []  # events of no choice (usage), sent once every choice is done
    head: dict = {}

    def finished(index: int, finish_reason: str | None) -> None:
        choices[index].done = True
        on_finish(index, choices[index].machine, finish_reason, len(choices) > 1)

    async for event in events:
        head = head or event
        index, text, finish_reason = _piece(kind, event)
        if index is None:
            trailing.append(event)
            continue
        if index not in choices:
            machine = GuardedStream(detector)
            choices[index] = _FilteredChoice(machine, _Alternatives(kind, machine, logprobs))
        choice = choices[index]
        if choice.done:  # cut: the upstream's rest of it is not sent
            continue
        choice.held.append((event, len(choice.machine.text), len(choice.machine.text) + len(text)))
        if len(text) > LARGE_PIECE:
            step = await asyncio.to_thread(choice.machine.feed, text, None, finish_reason)
        else:
            step = choice.machine.feed(text, None, finish_reason)
        if step.finish_reason == CONTENT_FILTER:
            for out in choice.cut(kind, index, _identity(head)):
                yield out
            finished(index, CONTENT_FILTER)
            continue
        for out in choice.released():
            yield out
        if step.action == "finish":
            finished(index, finish_reason)
    for index, choice in choices.items():  # [DONE] without a finish reason: judged whole at the end
        if not choice.done:
            step = choice.machine.end()
            if step.finish_reason == CONTENT_FILTER:
                for out in choice.cut(kind, index, _identity(head)):
                    yield out
            else:
                for event, _, _ in choice.held:
                    yield choice.alternatives.judged_event(event)
            finished(index, step.finish_reason)
    if not any(choice.machine.violations for choice in choices.values()):
        for event in trailing:  # the usage event, if the client asked for one (cut, it counts what was not sent)
            yield event


def _identity(head: dict) -> dict:
    """The upstream stream's id, object, creation time and model, for an event of ours."""
    return {k: head[k] for k in ("id", "object", "created", "model") if k in head}


class _Alternatives:
    """The alternatives beside each token of an upstream's reply (OpenAI's logprobs shapes): those the
    machine would not release after the answer so far dropped, the client's `count` kept. Tokens past
    `upto` (the end of a cut answer's text) go with the text they wrote."""

    def __init__(self, kind: Kind, machine: GuardedStream, count: int | None):
        self.kind, self.machine, self.count, self.context = kind, machine, count, ""

    def judged_event(self, event: dict) -> dict:
        choices = event.get("choices") or []
        if not choices or not choices[0].get("logprobs"):
            return event
        return {**event, "choices": [{**choices[0], "logprobs": self.judged(choices[0]["logprobs"])}, *choices[1:]]}

    def judged(self, logprobs: dict, upto: int | None = None) -> dict:
        try:
            return self._chat(logprobs, upto) if self.kind == "chat" else self._text(logprobs, upto)
        except (KeyError, TypeError, AttributeError):
            raise bad_gateway("the reply's logprobs are not OpenAI's shape") from None

    def _released(self, token: str, upto: int | None) -> bool:
        return upto is None or len(self.context) + len(token) <= upto

    def _chat(self, logprobs: dict, upto: int | None) -> dict:
        kept = []
        for position in logprobs["content"] or []:
            if not self._released(position["token"], upto):
                break
            top = [t for t in position.get("top_logprobs") or [] if self.machine.would_release(self.context, t["token"])]
            kept.append({**position, "top_logprobs": top[:self.count]})
            self.context += position["token"]
        return {**logprobs, "content": kept}

    def _text(self, logprobs: dict, upto: int | None) -> dict:
        tokens, tops = logprobs["tokens"], []
        for token, top in zip(tokens, logprobs["top_logprobs"]):
            if not self._released(token, upto):
                break
            alternatives = [(t, lp) for t, lp in (top or {}).items()
                            if t != token and self.machine.would_release(self.context, t)]
            tops.append({**{t: lp for t, lp in top.items() if t == token}, **dict(alternatives[:self.count])}
                        if top else top)
            self.context += token
        return {**logprobs, **{key: logprobs[key][:len(tops)] for key in ("tokens", "token_logprobs", "text_offset")},
                "top_logprobs": tops}


def _ours(kind: Kind, text: str | None, finish_reason: str | None, index: int) -> dict:
    """An event of ours, for a stream whose id, object, creation time and model are the upstream's."""
    return responses.chunk(kind, "", "", text, finish_reason, index=index).model_dump(exclude_unset=True)


def _piece(kind: Kind, event: dict) -> tuple[int | None, str, str | None]:
    """The choice an upstream event is of (None: none, a usage event), the text it adds, and its finish reason."""
    if not event["choices"]:
        return None, "", None
    choice = event["choices"][0]
    delta = choice.get("delta") or {}
    text = delta.get("content") if kind == "chat" else choice.get("text")
    arguments = _arguments(delta.get("tool_calls")) if kind == "chat" else ""
    return choice.get("index", 0), (text or "") + arguments, choice.get("finish_reason")


def _arguments(calls: list[dict] | None) -> str:
    """The arguments of a reply's (or a delta's) tool calls, joined: text the filter reads as any other."""
    return "".join((call.get("function") or {}).get("arguments") or "" for call in calls or ())
