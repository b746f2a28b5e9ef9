"""End to end: one `guard proxy` over two upstreams (`--upstream URL,URL`; the standard-library fake
upstream twice): requests are spread over both, and when one dies the other takes every request,
with no error for any client and /health still ok, naming the dead one."""

from __future__ import annotations

import json
import sys
from collections import Counter

import httpx
import pytest

from tests.support.servers import POLICY, Server, sse_data


@pytest.fixture(scope="module")
def pair(tmp_path_factory, fake_upstream):
    """(the proxy, the second upstream: the one this module kills)."""
    logs = tmp_path_factory.mktemp("upstream-pool")
    second = Server("fake-upstream-2", logs, command=(sys.executable, "-m", "harness.fake_upstream")).wait_ready(30)
    proxy = Server("proxy-pool", logs, "--upstream", f"{fake_upstream.url}/v1,{second.url}/v1", "--policy", POLICY,
                   "--enforcement", "filter", command=(sys.executable, "-m", "cli.main", "proxy"))
    try:
        yield proxy.wait_ready(), second
    finally:
        proxy.stop()
        second.stop()


def ports(proxy, n: int, stream: bool = False) -> Counter:
    """Which upstream answered each of `n` requests (the fake's `#port` script names its port)."""
    body = {"model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": "Where? #port"}]}
    answered = Counter()
    for _ in range(n):
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200, response.read()
            if stream:
                events = [json.loads(data) for data in sse_data(response)[:-1]]
                text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
            else:
                text = json.loads(response.read())["choices"][0]["message"]["content"]
        answered[text.removeprefix("Port ").removesuffix(".")] += 1
    return answered


def test_requests_spread_over_the_upstreams_and_survive_one_dying(pair, fake_upstream):
    proxy, second = pair
    spread = ports(proxy, 6)
    assert spread == {str(fake_upstream.port): 3, str(second.port): 3}  # round robin
    second.kill()
    after = ports(proxy, 6) + ports(proxy, 2, stream=True)
    assert after == {str(fake_upstream.port): 8}  # a refused connection goes to the other one: no error
    health = httpx.get(f"{proxy.url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert list(health.json()["upstreams_failing"]) == [f"{second.url}/v1"]  # named, for its operator
