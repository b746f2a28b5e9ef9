"""Production hardening end to end, on the session's guarded server (keys, a state dir, an audit log):
the key matrix, a forget target added at run time, 32 concurrent streams, and the engine killed under
load, then the restart that brings the server back with the target it was given.

The tests of this module run in file order: the last one crashes and restarts the server.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from httpx_sse import EventSource

from tests.support.servers import (ADMIN_KEY, EINSTEIN, FORGET_PROBES, MODEL, POLICY_DETECTOR, RELATIVITY, UNRELATED,
                                  ask, call, known_facts, names_or_near_misses, says_einstein, wait_enforced)

def test_keys_and_scopes(guarded):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert call(guarded, "GET", "/health", key="").status_code == 200  # open: for load balancers
    for key in ("", "wrong-key"):
        for method, path, body in [("POST", "/v1/chat/completions", chat), ("GET", "/v1/models", None),
                                   ("GET", "/v1/forget", None), ("GET", "/metrics", None)]:
            response = call(guarded, method, path, key=key, json=body)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    for method, path in [("GET", "/v1/forget"), ("POST", "/v1/forget"), ("DELETE", "/v1/forget/harry-potter"),
                         ("GET", "/metrics")]:
        response = call(guarded, method, path, json=EINSTEIN if method == "POST" else None)  # the user key
        assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"
    assert call(guarded, "POST", "/v1/chat/completions", json=chat).status_code == 200
    assert call(guarded, "GET", "/metrics", ADMIN_KEY).status_code == 200


@pytest.fixture(scope="module")
def einstein(servers, guarded):
    """Einstein added over the admin API, at run time; deleted again when the module is done."""
    assert says_einstein(ask(servers[1].ensure_running(), RELATIVITY)[0])  # the model knows: the probe can fail
    assert says_einstein(ask(guarded, RELATIVITY)[0])  # and says it while Einstein is no target
    added = call(guarded, "POST", "/v1/forget", ADMIN_KEY, json=EINSTEIN)
    assert added.status_code == 201, added.text
    try:
        version = added.json()["version"]
        print(f"einstein enforced {wait_enforced(guarded, version):.1f} s after the POST")
        yield version
    finally:  # whatever failed, the session's server goes back to the example policy alone
        deleted = call(guarded, "DELETE", "/v1/forget/einstein", ADMIN_KEY)
        assert deleted.status_code == 200, deleted.text
        wait_enforced(guarded, deleted.json()["version"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_target_added_at_run_time_is_enforced(guarded, einstein, stream):
    answer, _, headers = ask(guarded, RELATIVITY, stream=stream)
    assert headers["x-guard-targets"] == "einstein"
    assert not says_einstein(answer), answer
    assert "einstein" in [t["id"] for t in call(guarded, "GET", "/v1/forget", ADMIN_KEY).json()["data"]]


def test_restricted_requests_are_audited_without_text(guarded, einstein):
    ask(guarded, RELATIVITY)
    records = [json.loads(line) for line in (guarded.log.parent / "audit.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["targets"] == ["einstein"]]
    assert mine and mine[-1]["policy_version"] == einstein and mine[-1]["key_id"] not in ("anonymous", "")
    assert "relativity" not in json.dumps(records).lower()  # no prompt text unless --audit-text


def read_stream(server, question: str, max_tokens: int, started: threading.Semaphore | None = None) -> dict:
    """One streamed chat completion, parsed event by event, as a client that checks its stream;
    `started` is released at its first text."""
    body = {"model": MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}
    result = {"question": question, "status": None, "ids": set(), "text": "", "finishes": [], "errors": [],
              "done": False}
    try:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers(),
                          timeout=120) as response:
            result["status"] = response.status_code
            result["targets"] = response.headers.get("x-guard-targets")
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            for data in (event.data for event in EventSource(response).iter_sse()) if streamed else ():  # as they come
                if data == "[DONE]":
                    result["done"] = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    result["errors"].append(event["error"])
                    continue
                result["ids"].add(event["id"])
                for choice in event["choices"]:
                    if started is not None and not result["text"] and choice["delta"].get("content"):
                        started.release()
                    result["text"] += choice["delta"].get("content") or ""
                    if choice["finish_reason"]:
                        result["finishes"].append(choice["finish_reason"])
    except httpx.HTTPError as exc:
        result["errors"].append({"transport": repr(exc)})
    return result


def test_32_concurrent_streams_all_complete_unmixed(guarded, plain, einstein):
    known = known_facts(plain)
    questions = [*list(UNRELATED) * 6, *FORGET_PROBES[:6], RELATIVITY, RELATIVITY]
    assert len(questions) == 32
    with ThreadPoolExecutor(len(questions)) as pool:
        results = list(pool.map(lambda q: read_stream(guarded, q, 40), questions))
    for result in results:
        question, text = result["question"], result["text"]
        assert result["status"] == 200 and result["errors"] == [] and result["done"], result
        assert len(result["ids"]) == 1 and len(result["finishes"]) == 1, result  # one stream, one ending
        if question in UNRELATED:
            assert result["targets"] == "" and (question not in known or known[question] in text), result
            others = [fact for q, fact in UNRELATED.items() if q != question]
            assert not any(fact in text for fact in others), result  # nothing of another stream
        elif question == RELATIVITY:
            assert result["targets"] == "einstein" and not says_einstein(text), result
        else:
            assert result["targets"] == "harry-potter", result
            assert names_or_near_misses(text) == [] and POLICY_DETECTOR.violations(text) == [], result
    assert len({id_ for r in results for id_ in r["ids"]}) == 32
    metrics = call(guarded, "GET", "/metrics", ADMIN_KEY).text
    assert 'guard_restricted_requests_total{target="einstein"}' in metrics
    assert "guard_engine_requests_running" in metrics and "guard_engine_requests_waiting" in metrics
    def steps_published() -> float:  # the engine process publishes its step times about once a second
        return float(re.search(r"^guard_step_seconds_count (\S+)$", call(guarded, "GET", "/metrics", ADMIN_KEY).text,
                               re.M).group(1))
    deadline = time.monotonic() + 30
    while steps_published() == 0:
        assert time.monotonic() < deadline, "no step times published"
        time.sleep(0.2)


def test_engine_killed_under_load_fails_closed_until_the_restart(guarded, plain, einstein):
    long_ones = ["Write a very long story about a dragon.", "Write a long poem about the sea.",
                 "Explain photosynthesis in detail.", "Tell me everything about the history of Rome."]
    questions = [*long_ones, RELATIVITY, *FORGET_PROBES[:3]]
    with ThreadPoolExecutor(len(questions)) as pool:
        started = threading.Semaphore(0)
        running = [pool.submit(read_stream, guarded, q, 400, started if q in long_ones else None) for q in questions]
        for _ in long_ones:  # the long streams under way: each has its first text
            assert started.acquire(timeout=120), "a stream never started"
        engine_processes = psutil.Process(guarded.proc.pid).children(recursive=True)
        assert engine_processes, "no engine process to kill"
        for process in engine_processes:
            process.send_signal(signal.SIGKILL)
        results = [future.result(timeout=120) for future in running]  # none hangs
    for result in results:
        if result["question"] in long_ones:  # still generating at the kill: each stream learns of it
            assert result["errors"] or result["status"] == 503, result
        assert result["status"] != 200 or result["done"], result  # and a stream still ends properly
        assert not says_einstein(result["text"]) and names_or_near_misses(result["text"]) == [], result

    health = call(guarded, "GET", "/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    refused = call(guarded, "POST", "/v1/chat/completions",
                   json={"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "server_error"

    guarded.restart()  # a supervisor restarts the crashed server: same command, same --state-dir
    listing = call(guarded, "GET", "/v1/forget", ADMIN_KEY).json()
    assert "einstein" in [t["id"] for t in listing["data"]] and listing["enforced_version"] == einstein
    answer, _, headers = ask(guarded, RELATIVITY)
    assert headers["x-guard-targets"] == "einstein" and not says_einstein(answer), answer
    france = "What is the capital of France?"
    assert ask(guarded, france)[0] == ask(plain, france)[0]


def test_huge_requests_are_refused_while_the_others_are_answered(guarded):
    """A body over --max-request-bytes (8 MiB by default) is a 413 before it is read. One under it but
    far over the context (6 MB: seconds of tokenising) is a 400, and small requests go on being
    answered meanwhile: the tokenising and the classifier run off the event loop. (On the loop, none
    could finish while the huge one is tokenised.)"""
    url, headers = f"{guarded.url}/v1/chat/completions", guarded.headers()

    def post(text: str) -> httpx.Response:
        return httpx.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 1},
                          headers=headers, timeout=120)
    oversized = post("word " * 2_000_000)  # 10 MB
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "request_too_large", oversized.text
    with ThreadPoolExecutor(1) as pool:
        huge = pool.submit(post, "word " * 1_200_000)
        answered_meanwhile = 0
        while not huge.done():
            assert post("hi").status_code == 200
            answered_meanwhile += not huge.done()
    assert huge.result().status_code == 400 and huge.result().json()["error"]["code"] == "context_length_exceeded"
    assert answered_meanwhile >= 3, answered_meanwhile
