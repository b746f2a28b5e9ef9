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
from typing import Any, AsyncIterator, Iterator

from guard.alternatives import Alternatives
from guard.guarded_stream import CONTENT_FILTER, GuardedStream
from server.protocol import upstream_replies as replies
from server.protocol.responses import Kind
from server.serving.base import ChoiceState, CompletionJob
from server.upstream.client import bad_gateway

LARGE_PIECE = 4096  # characters


def judged_choice(kind: Kind, detector, choice: dict, logprobs: int | None) -> tuple[dict, GuardedStream]:
    """A whole reply's choice, cut before a violation (its text, calls and logprobs); and the machine
    that judged it."""
    text, calls = replies.choice_text(kind, choice)
    machine = GuardedStream(detector)
    finish_reason = None if calls else choice.get("finish_reason") or "stop"
    cut = machine.feed(text, None, finish_reason).finish_reason == CONTENT_FILTER
    if calls and not cut:  # the calls' arguments are read after the text: a leak in them drops every call
        cut = machine.feed(calls, None, choice.get("finish_reason") or "stop").finish_reason == CONTENT_FILTER
    kept = machine.text[:len(text)]
    if choice.get("logprobs"):  # cut, the answer ends with the last whole token its logprobs list
        alternatives = _Logprobs(kind, Alternatives(detector, logprobs))
        choice = {**choice, "logprobs": alternatives.judged(choice["logprobs"], len(kept) if cut else None)}
        kept = alternatives.context
    return (replies.cut_choice(kind, choice, kept, CONTENT_FILTER) if cut else choice), machine


@dataclass
class _Held:
    event: dict
    start: int  # the text offsets it spans
    end: int
    calls: bool  # it carries tool calls (never sent in part)


@dataclass
class _FilteredChoice:
    """One choice of a stream through the output filter: its machine, and its events not sent yet."""
    machine: GuardedStream
    alternatives: "_Logprobs"
    held: deque[_Held] = field(default_factory=deque)
    done: bool = False

    def released(self) -> Iterator[dict]:
        while self.held and self.held[0].end <= self.machine.sent:
            yield self.alternatives.judged_event(self.held.popleft().event)

    def cut(self, kind: Kind, index: int, identity: dict) -> Iterator[dict]:
        """Cut: the events wholly before the violation, the rest of the text before it, and the end."""
        text = self.machine.text
        while self.held and self.held[0].end <= len(text):
            yield self.alternatives.judged_event(self.held.popleft().event)
        if self.held and text[self.held[0].start:] and not self.held[0].calls:
            rest, logprobs = text[self.held[0].start:], self.held[0].event["choices"][0].get("logprobs")
            if logprobs:  # only the whole tokens its logprobs list
                before = len(self.alternatives.context)
                logprobs = self.alternatives.judged(logprobs, len(text))
                rest = self.alternatives.context[before:]
            if rest:
                event = {**replies.our_event(kind, rest, None, index), **identity}
                if logprobs:
                    event["choices"][0]["logprobs"] = logprobs
                yield event
        yield {**replies.our_event(kind, None, CONTENT_FILTER, index), **identity}


async def filtered_events(job: CompletionJob, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """An upstream's stream through the output filter, each choice on its own: its own events, each
    once the state machine has released its text (its logprobs' alternatives judged, as many kept as
    the client asked for); cut, the text before the violation and a finish event of ours, the
    upstream's rest of that choice and its usage event dropped. Each choice's state is kept in
    `job.choices`, finished once the client has its whole answer."""
    kind, detector = job.kind, job.restriction.detector
    choices: dict[int, _FilteredChoice] = {}
    trailing: list[dict] = []  # events of no choice (usage), sent once every choice is done
    head: dict = {}

    def finished(index: int, finish_reason: str | None) -> None:
        choices[index].done = True
        while len(job.choices) <= index:  # an upstream that answers more choices than asked for
            job.choices.append(ChoiceState(len(job.choices)))
        machine, state = choices[index].machine, job.choices[index]
        state.text, state.violations, state.finish_reason = machine.text, tuple(machine.violations), finish_reason

    async for event in events:
        head = head or event
        index, text, finish_reason, calls = replies.event_piece(kind, event)
        if index is None:
            trailing.append(event)
            continue
        if index not in choices:
            choices[index] = _FilteredChoice(GuardedStream(detector),
                                             _Logprobs(kind, Alternatives(detector, job.body.logprobs_count)))
        choice = choices[index]
        if choice.done:  # cut: the upstream's rest of it is not sent
            continue
        choice.held.append(_Held(event, len(choice.machine.text), len(choice.machine.text) + len(text), calls))
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
                for held in choice.held:
                    yield choice.alternatives.judged_event(held.event)
            finished(index, step.finish_reason)
    if not any(choice.machine.violations for choice in choices.values()):
        for event in trailing:  # the usage event, if the client asked for one (cut, it counts what was not sent)
            yield event


def _identity(head: dict) -> dict:
    """The upstream stream's id, object, creation time and model, for an event of ours."""
    return {k: head[k] for k in ("id", "object", "created", "model") if k in head}


class _Logprobs:
    """The logprobs beside each token of one choice of an upstream's reply, judged (guard.alternatives)."""

    def __init__(self, kind: Kind, alternatives: Alternatives):
        self.kind, self.alternatives = kind, alternatives

    @property
    def context(self) -> str:
        """The choice's text so far, as its logprobs' tokens write it."""
        return self.alternatives.context

    def judged_event(self, event: dict) -> dict:
        choices = event.get("choices") or []
        if not choices or not choices[0].get("logprobs"):
            return event
        return {**event, "choices": [{**choices[0], "logprobs": self.judged(choices[0]["logprobs"])}, *choices[1:]]}

    def judged(self, logprobs: dict, upto: int | None = None) -> dict:
        try:
            return replies.judged_logprobs(self.kind, logprobs, self.alternatives, upto)
        except (KeyError, TypeError, AttributeError):
            raise bad_gateway("the reply's logprobs are not OpenAI's shape") from None
