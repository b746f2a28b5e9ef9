"""End to end: `guard proxy` in front of a `vllm serve` that runs the guard's logits processor.

The full enforcement level: the token-level guard runs inside the upstream engine and the proxy
runs the same generation loop as `guard serve`, so its answers must be `guard serve`'s, word for
word, on the same model and policy (the session's guarded server).
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import FORGET_PROBES, POLICY_DETECTOR, UNRELATED, ask, names_or_near_misses


@pytest.fixture(scope="module")
def full(proxies):
    return proxies["full"]


def test_the_proxy_finds_the_plugin(full):
    health = httpx.get(f"{full.url}/health", timeout=10).json()
    assert health["enforcement"] == "full" and health["upstreams_failing"] == {}


# Every probe once, whole and streamed in turn (the two share the generation loop: test_integration
# checks they agree), and one unrelated question both ways.
UNRELATED_QUESTION = list(UNRELATED)[0]
CASES = [*((q, i % 2 == 1) for i, q in enumerate(FORGET_PROBES)), (UNRELATED_QUESTION, False), (UNRELATED_QUESTION, True)]


@pytest.mark.parametrize("question, stream", CASES)
def test_answers_match_guard_serve(full, guarded, question, stream):
    proxied, proxied_finish, headers = ask(full, question, stream=stream)
    served, served_finish, served_headers = ask(guarded, question, stream=stream)
    assert headers["x-guard-targets"] == served_headers["x-guard-targets"]
    assert (proxied, proxied_finish) == (served, served_finish)
    assert names_or_near_misses(proxied) == [] or question in UNRELATED
    assert POLICY_DETECTOR.violations(proxied) == [] or question in UNRELATED
