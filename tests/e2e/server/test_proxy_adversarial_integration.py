"""End to end: `guard proxy --enforcement filter` in front of a deliberately misbehaving upstream
(harness/fake_upstream.py, a standard-library server started here), as an attacker would use it:
forbidden names in disguise, replies of the wrong shape, one endless word, and an admin posting a
target bigger than the guard can enforce. The real `guard proxy` process, the real HTTP client.
(The bias level relays through the same code; the full level's shapes are tested in test_upstream.py.)
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from harness.fake_upstream import TEXTS, WHOLE
from tests.support.servers import guard_proxy, sse_data

USER, ADMIN = "user-key", "admin-key"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, fake_upstream):
    proxy = guard_proxy("proxy-adversarial", tmp_path_factory.mktemp("adversarial"), fake_upstream,
                        "--enforcement", "filter", env={"GUARD_API_KEYS": USER, "GUARD_ADMIN_KEYS": ADMIN})
    try:
        yield proxy.wait_ready()
    finally:
        proxy.stop()


def ask(proxy, script: str, stream: bool, question: str = "Who wrote the Harry Potter books?"):
    """(status, text, finish reason, the stream's event data) for a question that runs `#script` upstream."""
    body = {"model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": f"{question} #{script}"}]}
    with httpx.Client(base_url=proxy.url, timeout=60, headers={"authorization": f"Bearer {USER}"}) as client:
        if not stream:
            response = client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                return response.status_code, response.json(), None, []
            choice = response.json()["choices"][0]
            return 200, choice["message"]["content"], choice["finish_reason"], []
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return response.status_code, json.loads(response.read()), None, []
            data = sse_data(response)
    text, finish = "", None
    for item in data[:-1]:
        event = json.loads(item)
        if "error" in event:
            return 200, event, "error", data
        text += event["choices"][0]["delta"].get("content") or ""
        finish = event["choices"][0].get("finish_reason") or finish
    return 200, text, finish, data


DISGUISES = {  # script -> the first disguised name in its answer
    "cyrillic": "J.K. R\u043ewling", "greek": "V\u03bfldem\u03bfrt", "fullwidth": "\uff32\uff4f\uff4e",
    "digits": "H3rm10n3", "symbols": "J.K. R0wl1ng", "zero-width": "Row\u200bling",
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("script", DISGUISES)
def test_no_disguised_spelling_of_a_forbidden_name_reaches_the_client(proxy, script, stream):
    status, text, finish, _ = ask(proxy, script, stream)
    assert status == 200 and finish == "content_filter"
    assert text == TEXTS[script][:TEXTS[script].index(DISGUISES[script])]  # everything before the name, nothing after


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_innocent_answer_with_numbers_passes_whole(proxy, stream):
    status, text, finish, _ = ask(proxy, "innocent", stream, "What is the capital of France?")
    assert (status, text, finish) == (200, TEXTS["innocent"], "stop")


@pytest.mark.parametrize("script", sorted(WHOLE))
def test_a_malformed_whole_reply_is_a_502_upstream_error(proxy, script):
    status, body, _, _ = ask(proxy, script, stream=False)
    assert status == 502 and body["error"]["code"] == "upstream_error", body


@pytest.mark.parametrize("script", [*sorted(WHOLE), "not-json"])
def test_a_malformed_first_event_is_a_502_before_streaming(proxy, script):
    status, body, _, _ = ask(proxy, script, stream=True)
    assert status == 502 and body["error"]["code"] == "upstream_error", body


@pytest.mark.parametrize("script", ["late-content-number", "late-list", "late-message-not-object", "late-not-json"])
def test_a_malformed_event_once_streaming_ends_the_stream_with_an_error_event_and_done(proxy, script):
    status, event, finish, data = ask(proxy, script, stream=True)
    assert status == 200 and finish == "error" and event["error"]["code"] == "upstream_error"
    assert data[-1] == "[DONE]"


def test_one_endless_word_streams_through_while_health_keeps_answering(proxy):
    """16,000 characters of one word, in 4-character events. Before the filter judged long words
    incrementally this took 8 s and stalled /health for as long; the timings are measured by
    `python -m benchmarks.filter_cost`, not here. Here: the word comes through whole, and /health
    answers throughout (each within its 5 s timeout)."""
    healths, done = [], threading.Event()

    def poll():
        with httpx.Client(base_url=proxy.url, timeout=5) as client:
            while not done.is_set():
                try:
                    healths.append(client.get("/health").status_code)
                except httpx.HTTPError as exc:  # a stalled event loop: a timeout
                    healths.append(type(exc).__name__)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        status, text, finish, _ = ask(proxy, "long-16000", stream=True)
    finally:
        done.set()
        poller.join()
    assert (status, text, finish) == (200, "a" * 16000, "stop")
    assert healths and set(healths) == {200}


def test_a_target_bigger_than_the_guard_can_enforce_is_refused_and_requests_keep_working(proxy):
    admin = {"authorization": f"Bearer {ADMIN}"}
    target = {"id": "many-names", "description": "A takedown with too many names.",
              "phrases": [f"Person Number {i}" for i in range(5001)]}
    refused = httpx.post(f"{proxy.url}/v1/forget", json=target, headers=admin, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "phrases"
    assert "1024" in refused.json()["error"]["message"]
    assert [t["id"] for t in httpx.get(f"{proxy.url}/v1/forget", headers=admin).json()["data"]] == ["harry-potter"]
    status, text, finish, _ = ask(proxy, "digits", stream=False)
    assert status == 200 and finish == "content_filter"
