"""End to end: `guard proxy` in front of a real, plain `vllm serve` of the bundled model (no plugin).

Two proxies start in front of the same upstream: one at the bias level (told the tokenizer) and one
at the filter level (told nothing). The real `openai` client talks to them, and every answer is
checked against what the upstream says alone. The upstream is the session's plain `vllm serve`
(conftest.py); the last test kills it mid-stream, and the `plain` fixture starts it again for any
test that runs after. (The plugin-enabled upstream is test_proxy_full_integration.py.)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource

from tests.e2e.server.conftest import FILTER_ADMIN_KEY, FILTER_KEY
from tests.support.servers import (EINSTEIN, FORGET_PROBES, MODEL, RELATIVITY, UNRELATED, ask,
                                  assert_names_the_author, forgotten, says_einstein, sse_data, wait_enforced)

LEVELS = ["bias", "filter"]
HTTP = httpx.Client(headers={"authorization": f"Bearer {FILTER_KEY}"})  # the filter proxy requires a key


@pytest.fixture(scope="module")
def stack(servers, proxies):
    return servers[1].ensure_running(), {level: proxies[level] for level in LEVELS}


@pytest.fixture(scope="module")
def upstream(stack):
    return stack[0]


@pytest.fixture(scope="module", params=LEVELS)
def proxy(request, stack):
    return stack[1][request.param]


def test_each_proxy_reports_its_level_and_mirrors_the_upstreams_models(stack):
    upstream, proxies = stack
    for level, proxy in proxies.items():
        health = HTTP.get(f"{proxy.url}/health", timeout=10).json()
        assert health["status"] == "ok" and health["enforcement"] == level and health["targets"] == 1
        mirrored = HTTP.get(f"{proxy.url}/v1/models", timeout=10).json()
        direct = HTTP.get(f"{upstream.url}/v1/models", timeout=10).json()
        assert [m["id"] for m in mirrored["data"]] == [m["id"] for m in direct["data"]] == [MODEL]
        assert mirrored["data"][0]["max_model_len"] == direct["data"][0]["max_model_len"]


def test_the_upstream_alone_leaks(upstream):
    assert_names_the_author(upstream)  # what the proxies must stop


# Every probe through the bias level, whole and streamed in turn; the filter level (the same filter, no
# bias) on a sample of them. Whole and streamed answers share the output filter (tests/unit/server/test_relay.py).
@pytest.mark.parametrize("level, question, stream", [*(("bias", q, i % 2 == 1) for i, q in enumerate(FORGET_PROBES)),
                                                     *(("filter", q, i % 2 == 0) for i, q in enumerate(FORGET_PROBES[::2]))])
def test_forget_probes_do_not_leak(stack, level, question, stream):
    assert forgotten(stack[1][level], question, stream)[1] in ("stop", "length", "content_filter")


# Two questions per level, whole and streamed (test_always_enforced_integration asks two more of each level).
@pytest.mark.parametrize("level, question, fact, stream", [
    ("bias", *list(UNRELATED.items())[2], False), ("bias", *list(UNRELATED.items())[3], True),
    ("filter", *list(UNRELATED.items())[2], True), ("filter", *list(UNRELATED.items())[3], False)])
def test_unrelated_questions_pass_through_untouched(stack, upstream, level, question, fact, stream):
    direct, _, _ = ask(upstream, question)
    proxied, _, headers = ask(stack[1][level], question, stream=stream)
    assert fact in direct, direct
    assert headers["x-guard-targets"] == ""
    assert proxied == direct


def _sse_payloads(url: str, body: dict) -> list:
    with HTTP.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        data = sse_data(response)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_pass_through_keeps_fields_framing_usage_and_ids(proxy, upstream):
    """Unknown request fields reach the upstream (vLLM's ignore_eos, min_tokens); the reply is the
    upstream's own: its id, its usage, its chunks, its extra fields."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12, "temperature": 0, "ignore_eos": True, "min_tokens": 12}
    direct = HTTP.post(f"{upstream.url}/v1/chat/completions", json=body, timeout=60).json()
    proxied = HTTP.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=60).json()
    assert proxied["usage"]["completion_tokens"] == 12  # ignore_eos and min_tokens were forwarded
    assert proxied["id"].startswith("chatcmpl-") and proxied["id"] != direct["id"]  # the upstream's fresh id
    ignore = {"id", "created"}
    assert {k: v for k, v in proxied.items() if k not in ignore} == {k: v for k, v in direct.items() if k not in ignore}

    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    direct_events = _sse_payloads(f"{upstream.url}/v1/chat/completions", streamed)
    proxied_events = _sse_payloads(f"{proxy.url}/v1/chat/completions", streamed)
    strip = [{k: v for k, v in e.items() if k not in ignore} for e in direct_events]
    assert [{k: v for k, v in e.items() if k not in ignore} for e in proxied_events] == strip
    assert len({e["id"] for e in proxied_events}) == 1 and proxied_events[-1]["usage"]["completion_tokens"] == 12


def test_upstream_4xx_errors_come_back_as_they_are(proxy, upstream):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    direct = HTTP.post(f"{upstream.url}/v1/chat/completions", json=body, timeout=60)
    proxied = HTTP.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=60)
    assert direct.status_code == proxied.status_code == 400
    assert proxied.json() == direct.json()
    unknown = HTTP.post(f"{proxy.url}/v1/chat/completions", json={**body, "model": "gpt-9", "max_tokens": 5},
                         timeout=60)
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_the_proxys_own_validation_names_the_field(proxy):
    response = HTTP.post(f"{proxy.url}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 7})
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    broken = HTTP.post(f"{proxy.url}/v1/chat/completions", content=b'{"model": ', timeout=30,
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


def test_keys_guard_the_proxy_too(stack):
    proxy = stack[1]["filter"]  # started with GUARD_API_KEYS and GUARD_ADMIN_KEYS
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30).status_code == 401
    assert HTTP.get(f"{proxy.url}/metrics", timeout=30).status_code == 403  # a user key
    metrics = httpx.get(f"{proxy.url}/metrics", headers={"authorization": f"Bearer {FILTER_ADMIN_KEY}"}, timeout=30)
    assert metrics.status_code == 200 and 'guard_restricted_requests_total{target="harry-potter"}' in metrics.text


def test_restricted_requests_leave_audit_records_without_text(stack):
    proxy = stack[1]["bias"]
    log = Path(proxy.log).with_name("audit.jsonl")
    before = len(log.read_text().splitlines()) if log.exists() else 0
    ask(proxy, FORGET_PROBES[0])
    ask(proxy, "What is the capital of France?")
    records = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert len(records) == 1 and records[0]["targets"] == ["harry-potter"]
    assert records[0]["action"] in ("penalised", "filtered") and "prompt" not in records[0]


def test_targets_added_at_run_time_reach_the_proxy_too(stack, upstream):
    proxy = stack[1]["bias"]  # without keys: the admin routes are open, as every other
    assert says_einstein(ask(upstream, RELATIVITY)[0])
    added = httpx.post(f"{proxy.url}/v1/forget", json=EINSTEIN, timeout=30)
    assert added.status_code == 201, added.text
    wait_enforced(proxy, added.json()["version"])
    answer, _, headers = ask(proxy, RELATIVITY)
    assert headers["x-guard-targets"] == "einstein" and not says_einstein(answer), answer
    deleted = httpx.delete(f"{proxy.url}/v1/forget/einstein", timeout=30)
    wait_enforced(proxy, deleted.json()["version"])
    assert ask(proxy, RELATIVITY)[2]["x-guard-targets"] == ""


def test_upstream_killed_mid_stream_ends_the_stream_and_later_requests_get_5xx_quickly(stack):
    """Last in this module: it kills the upstream."""
    upstream, proxies = stack
    proxy = proxies["bias"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story about Paris."}],
            "max_tokens": 1500, "temperature": 0, "ignore_eos": True, "stream": True}
    lines: list[str] = []
    first = threading.Event()

    def read():
        with HTTP.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=60) as response:
            for event in EventSource(response).iter_sse():
                lines.append(event.data)
                first.set()
    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(60), "no first chunk"
    upstream.kill()
    reader.join(60)
    assert not reader.is_alive(), "the stream hangs after the upstream died"
    assert lines[-1] == "[DONE]" and "error" in json.loads(lines[-2]), lines[-3:]

    started = time.monotonic()
    down = HTTP.post(f"{proxy.url}/v1/chat/completions", timeout=60,
                      json={**body, "stream": False, "max_tokens": 5})
    assert down.status_code in (502, 503, 504) and down.json()["error"]["type"] == "server_error"
    assert time.monotonic() - started < 30
    assert HTTP.get(f"{proxy.url}/health", timeout=30).status_code == 503
