"""End to end: a target's explicit phrases are enforced on every answer, flagged or not (`enforce: always`).

Two targets the example policy lacks are added at run time to `guard serve` and to the proxy at every
level: Tolkien (the Lord of the Rings) and Einstein. The questions below never name them and the
classifier does not flag them (asserted), yet the model's honest answer names them (asserted against
the plain `vllm serve`): only the safety net stands between them and a leak. Unrelated answers must
stay word for word plain vLLM's.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from guard.leaks import LeakDetector
from tests.conftest import UNSEEN_POLICY
from tests.e2e.server.conftest import FILTER_ADMIN_KEY
from tests.support.servers import ADMIN_KEY, UNRELATED, ask, wait_enforced

TARGETS = UNSEEN_POLICY["targets"]  # Einstein, and the Lord of the Rings with J.R.R. Tolkien
# Questions of the targets' field, genre or era that name neither target: the classifier lets them
# through, and the unguarded model answers them with a target's name.
UNNAMED = [
    "Name some famous fantasy book series and their authors.",
    "Who were the most important thinkers of the twentieth century?",
    "Who are the most famous fantasy authors?",
]
PHRASES = [p for t in TARGETS for p in t["phrases"]]
EXPLICIT = LeakDetector(PHRASES, strict=False)  # the leak definition for answers about no target
LEVELS = ["serve", "full", "bias", "filter"]
TOKENS = 48  # the unguarded answers name a target within their first 30 tokens


def says_a_target(text: str) -> bool:
    """An independent check: a target's surname anywhere in the letters of the text."""
    letters = re.sub(r"[^a-z]", "", text.lower())
    return any(name in letters for name in ("tolkien", "einstein", "frodo", "gandalf"))


@pytest.fixture(scope="module")
def servers_with_targets(guarded, proxies):
    """Every server with the two targets added over its admin API; deleted again afterwards."""
    servers = {"serve": (guarded, ADMIN_KEY), "full": (proxies["full"], None), "bias": (proxies["bias"], None),
               "filter": (proxies["filter"], FILTER_ADMIN_KEY)}

    def change(server, key, method: str) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        versions = []
        for target in TARGETS:
            path, body = ("/v1/forget", target) if method == "POST" else (f"/v1/forget/{target['id']}", None)
            response = httpx.request(method, f"{server.url}{path}", headers=headers, json=body, timeout=60)
            if method == "DELETE" and response.status_code == 404:
                continue  # never added: the POSTs failed part-way
            assert response.status_code in (200, 201), response.text
            versions.append(response.json()["version"])
        if versions:
            wait_enforced(server, versions[-1], key=key or ADMIN_KEY)

    def change_all(method: str) -> None:
        """`guard serve` first: it trains each new policy's classifier into the shared cache, where the
        three proxies, changed at once after it, find them (trained by all four at once, each would
        take four times as long)."""
        change(*servers["serve"], method)
        others = [entry for level, entry in servers.items() if level != "serve"]
        with ThreadPoolExecutor(len(others)) as pool:
            list(pool.map(lambda entry: change(*entry, method), others))
    try:
        change_all("POST")
        yield {level: server for level, (server, _) in servers.items()}
    finally:  # whatever failed, the session's servers go back to the example policy alone
        change_all("DELETE")


@pytest.fixture(scope="module")
def unguarded(servers):
    """The plain model's answers: each names a target (so the tests below can fail)."""
    answers = {q: ask(servers[1].ensure_running(), q, max_tokens=TOKENS)[0] for q in [*UNNAMED, *list(UNRELATED)[:2]]}
    for question in UNNAMED:
        assert says_a_target(answers[question]), (question, answers[question])
    return answers


# Each question once per level, whole and streamed in turn (streamed equals whole: test_integration).
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("index", range(len(UNNAMED)))
def test_unflagged_answers_never_say_a_targets_phrase(servers_with_targets, unguarded, level, index):
    answer, finish, headers = ask(servers_with_targets[level], UNNAMED[index], stream=(index + LEVELS.index(level)) % 2 == 1,
                                  max_tokens=TOKENS)
    assert headers["x-guard-targets"] == ""  # the classifier did not flag it: the safety net alone
    assert not says_a_target(answer) and EXPLICIT.violations(answer) == [], answer
    assert finish in ("stop", "length", "content_filter")


@pytest.mark.parametrize("level", LEVELS)
def test_unrelated_answers_are_plain_vllms(servers_with_targets, unguarded, level):
    for i, question in enumerate(list(UNRELATED)[:2]):
        answer, _, headers = ask(servers_with_targets[level], question, stream=i % 2 == 1, max_tokens=TOKENS)
        assert headers["x-guard-targets"] == "" and answer == unguarded[question]
