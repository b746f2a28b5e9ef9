"""The relay's output filter over an upstream's stream of events: its own events held back until
judged, a cut before a leak, never a leaked character out (the real proxy: test_proxy_integration.py)."""

import asyncio

import pytest

from guard.leaks import LeakDetector
from guard.restriction import Restriction
from server.protocol.requests import ChatCompletionRequest
from server.serving.base import CompletionJob
from server.serving.relay.output_filter import filtered_events
from tests.conftest import HP_PHRASES

DETECTOR = LeakDetector(HP_PHRASES)


def events_of(pieces: list[str], finish: str | None = "stop") -> list[dict]:
    """A chat stream as vLLM writes it: the role, one event per piece, the finish, the usage."""
    head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    events = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    if finish:
        events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return events + [{**head, "choices": [], "usage": {"completion_tokens": len(pieces)}}]


def with_logprobs(events: list[dict], alternatives: dict[str, list[str]]) -> list[dict]:
    """The events with chat logprobs: each piece one token, beside it the alternatives given for it."""
    for event in events:
        choice = (event["choices"] or [{}])[0]
        token = choice.get("delta", {}).get("content")
        if token:
            choice["logprobs"] = {"content": [{"token": token, "logprob": -0.1, "bytes": None, "top_logprobs": [
                {"token": t, "logprob": -1.0 - rank, "bytes": None}
                for rank, t in enumerate(alternatives.get(token, []))]}]}
    return events


def job_of(detector=DETECTOR, logprobs: int | None = None) -> CompletionJob:
    """A relayed chat request's job, restricted by `detector`, asking for `logprobs` alternatives."""
    asked = {"logprobs": True, "top_logprobs": logprobs} if logprobs is not None else {}
    job = CompletionJob(ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}], **asked),
                        b"{}", "anonymous")
    job.restriction = Restriction(("harry-potter",), None, detector)
    return job


def run(events: list[dict], detector=DETECTOR, logprobs: int | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    job = job_of(detector, logprobs)

    async def source():
        for event in events:
            yield event

    async def collect():
        return [e async for e in filtered_events(job, source())]
    out = asyncio.run(collect())
    return out, [(choice.text, choice.finish_reason) for choice in job.choices if choice.finished]


def text_of(events: list[dict]) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])


def test_innocent_answers_are_the_upstreams_own_events():
    upstream = events_of(["The capital", " of France", " is Paris", "."], "length")
    out, finished = run(upstream)
    assert out == upstream  # the same events, usage included, in the same order
    assert finished == [("The capital of France is Paris.", "length")]


@pytest.mark.parametrize("pieces, kept", [
    (["The books are by J", ".K", ". Row", "ling", "."], "The books are by "),  # split across pieces
    (["The author is jk ", "ROWLING", " herself"], "The author is "),  # case and spacing folded
    (["Ask ", "J. K. Rowley", " about it"], "Ask "),  # a near-miss spelling
    (["Lord Volde", "rmort rises"], "Lord "),  # a near-miss of a forbidden name
])
def test_a_leak_is_cut_before_it_and_ends_with_content_filter(pieces, kept):
    out, finished = run(events_of(pieces))
    assert text_of(out) == kept
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter" and out[-1]["id"] == "chatcmpl-up"
    assert all("usage" not in e for e in out) and finished == [(kept, "content_filter")]


def test_nothing_undecided_is_released_early():
    """While "Row" could still become "Rowling" its event is held back, so nothing sent needs taking back."""
    released_when_asked: list[str] = []
    seen: list[dict] = []
    events = events_of(["By ", "Row", "ling"], finish=None)

    async def source():
        for event in events:
            released_when_asked.append(text_of(seen))  # what the client had before this event arrived
            yield event

    async def collect():
        async for event in filtered_events(job_of(), source()):
            seen.append(event)
    asyncio.run(collect())
    assert released_when_asked[1:4] == ["", "By ", "By "]  # "By " goes at once; "Row" is held back
    assert text_of(seen) == "By " and seen[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_a_stream_without_a_finish_reason_is_judged_whole_at_its_end():
    out, finished = run(events_of(["Paris is", " lovely"], finish=None))
    assert text_of(out) == "Paris is lovely" and finished == [("Paris is lovely", "stop")]
    out, _ = run(events_of(["His enemy is", " Voldermor"], finish=None))
    assert text_of(out) == "His enemy is " and out[-1]["choices"][0]["finish_reason"] == "content_filter"


def alternatives_of(events: list[dict]) -> list[list[str]]:
    return [[t["token"] for t in p["top_logprobs"]] for e in events if e["choices"] and e["choices"][0].get("logprobs")
            for p in e["choices"][0]["logprobs"]["content"]]


def test_alternatives_that_would_leak_are_dropped_and_the_count_kept():
    """After "The books are by", " Rowling" and " Rowl" (its beginning) would leak; " Smith" would not."""
    events = with_logprobs(events_of(["The books are by", " Smith", "."]), {
        " Smith": [" Rowling", " Rowl", " Smith", " Jones", " Brown"], "The books are by": ["The", "A"]})
    out, _ = run(events, logprobs=2)
    assert text_of(out) == "The books are by Smith."
    assert alternatives_of(out) == [["The", "A"], [" Smith", " Jones"], []]


def test_a_cut_answer_ends_with_the_last_whole_token_its_logprobs_list():
    """Cut inside the token " J.K. Rowling": its " " goes with it, so the tokens still spell the text."""
    out, _ = run(with_logprobs(events_of(["The author is", " J.K. Rowling", " herself"]), {}), logprobs=0)
    assert text_of(out) == "The author is"
    assert [p["token"] for e in out if e["choices"] and e["choices"][0].get("logprobs")
            for p in e["choices"][0]["logprobs"]["content"]] == ["The author is"]


def test_each_choice_is_filtered_on_its_own():
    """Two choices interleaved, as vLLM streams them: the leaking one is cut (the upstream's rest of it
    dropped, and the usage, which counts it), the other goes out whole."""
    clean, leaking = events_of(["Paris", " is", " lovely"]), events_of(["By ", "J.K. Row", "ling", " herself"])
    for event in leaking:
        for choice in event["choices"]:
            choice["index"] = 1
    usage = clean.pop()
    leaking.pop()
    events = [event for pair in zip(clean, leaking) for event in pair] + leaking[len(clean):] + [usage]
    out, finished = run(events)
    texts = {0: "", 1: ""}
    for event in out[:-1]:
        texts[event["choices"][0]["index"]] += event["choices"][0]["delta"].get("content") or ""
    assert texts == {0: "Paris is lovely", 1: "By "}
    finishes = [(e["choices"][0]["index"], e["choices"][0]["finish_reason"]) for e in out
                if e["choices"] and e["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [(0, "stop"), (1, "content_filter")]
    assert "usage" not in out[-1] and sorted(finished) == [("By ", "content_filter"), ("Paris is lovely", "stop")]


def test_tool_call_arguments_are_read_as_text_and_a_leak_in_them_ends_the_call():
    """A named call's arguments streamed as vLLM streams them: sent while they name nobody, the
    fragment that would complete a name never."""
    head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7, "model": "m"}

    def call(arguments: str, first: bool = False) -> dict:
        delta = {"index": 0, "function": {"arguments": arguments}}
        if first:
            delta = {**delta, "id": "call-1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
        return {**head, "choices": [{"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}]}
    events = [call('{"book": "Harry', first=True), call(' Potter", "author": "J.K.'), call(' Rowling"}'),
              {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    out, finished = run(events)
    sent = "".join(d["function"]["arguments"] for e in out if e["choices"]
                   for d in e["choices"][0]["delta"].get("tool_calls") or [])
    assert sent == '{"book": "Harry'  # the fragment holding the violation's start goes with it
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter" and finished[0][1] == "content_filter"
