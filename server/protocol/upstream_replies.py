"""Reading and rewriting an upstream's OpenAI-shaped replies, chat or text: where a choice's text, tool
calls and logprobs are, and the same choice cut short. The output filter (server.serving.relay)
judges what they say; the shapes they were checked against are server.protocol.upstream_shapes'."""

from __future__ import annotations

from typing import Any

from guard.alternatives import Alternatives
from server.protocol import responses
from server.protocol.responses import Kind


def path(kind: Kind) -> str:
    """The upstream route that answers `kind`."""
    return "/chat/completions" if kind == "chat" else "/completions"


def logprobs_field(kind: Kind) -> str:
    """The request field that says how many alternatives to list beside each token."""
    return "top_logprobs" if kind == "chat" else "logprobs"


def choice_text(kind: Kind, choice: dict) -> tuple[str, str]:
    """A whole reply's choice: its text, and its tool calls' arguments joined (read as text after it)."""
    if kind == "chat":
        return choice["message"].get("content") or "", _arguments(choice["message"].get("tool_calls"))
    return choice.get("text") or "", ""


def cut_choice(kind: Kind, choice: dict, kept: str, finish_reason: str) -> dict:
    """`choice` with its text cut to `kept` (and, for a chat, no tool calls)."""
    if kind == "chat":
        choice = {**choice, "message": {**choice["message"], "content": kept, "tool_calls": []}}
    else:
        choice = {**choice, "text": kept}
    return {**choice, "finish_reason": finish_reason}


def event_piece(kind: Kind, event: dict) -> tuple[int | None, str, str | None, bool]:
    """The choice a streamed event is of (None: none, a usage event), the text it adds (tool calls'
    arguments included), its finish reason, and whether it carries tool calls."""
    if not event["choices"]:
        return None, "", None, False
    choice = event["choices"][0]
    delta = choice.get("delta") or {}
    if kind == "chat":
        text, calls = delta.get("content") or "", delta.get("tool_calls")
        return choice.get("index", 0), text + _arguments(calls), choice.get("finish_reason"), bool(calls)
    return choice.get("index", 0), choice.get("text") or "", choice.get("finish_reason"), False


def our_event(kind: Kind, text: str | None, finish_reason: str | None, index: int) -> dict:
    """An event of ours, for a stream whose id, object, creation time and model are the upstream's."""
    return responses.chunk(kind, "", "", text, finish_reason, index=index).model_dump(exclude_unset=True)


def judged_logprobs(kind: Kind, logprobs: dict, alternatives: Alternatives, upto: int | None = None) -> dict:
    """`logprobs` with only the alternatives `alternatives` lets the client see; tokens past `upto` (the end
    of a cut answer's text) dropped. KeyError, TypeError or AttributeError: they are not OpenAI's shape."""
    def released(token: str) -> bool:
        return upto is None or len(alternatives.context) + len(token) <= upto

    if kind == "chat":
        kept = []
        for position in logprobs["content"] or []:
            if not released(position["token"]):
                break
            top = position.get("top_logprobs") or []
            shown = alternatives.shown(position["token"], [t["token"] for t in top])
            kept.append({**position, "top_logprobs": [top[i] for i in shown]})
        return {**logprobs, "content": kept}
    tops: list[Any] = []
    for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"]):
        if not released(token):
            break
        others = [(t, lp) for t, lp in (top or {}).items() if t != token]
        shown = alternatives.shown(token, [t for t, _ in others])
        tops.append({**{t: lp for t, lp in top.items() if t == token}, **dict(others[i] for i in shown)} if top else top)
    return {**logprobs, **{key: logprobs[key][:len(tops)] for key in ("tokens", "token_logprobs", "text_offset")},
            "top_logprobs": tops}


def _arguments(calls: list[dict] | None) -> str:
    """The arguments of a reply's (or a delta's) tool calls, joined: text the filter reads as any other."""
    return "".join((call.get("function") or {}).get("arguments") or "" for call in calls or ())
