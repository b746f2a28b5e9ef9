"""End to end: three `guard proxy` replicas sharing one policy store in a real PostgreSQL server
(`--state-url`), in front of the standard-library fake upstream.

The replicas poll their store only every 60 s here, so a change that reaches the others sooner came
by LISTEN/NOTIFY. A key's rate limit is one budget across them, counted in the same database. Then the database is killed while targets are being posted, and started again:
the replicas keep guarding with their last version meanwhile (and say so), nothing that was
acknowledged is lost, and nothing that was refused was written.
"""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from harness.processes import stop_all
from tests.support.servers import guard_proxy

ADMIN, USER = "admin-key", "user-key"
HEADERS = {"authorization": f"Bearer {ADMIN}"}
REQUESTS_PER_MINUTE = 30  # per key, for the fleet


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres, fake_upstream):
    postgres.reset()
    logs = tmp_path_factory.mktemp("replicas")
    started = []
    try:
        for i in range(3):  # the classifier is not what is tested here: every target restricts every request
            started.append(guard_proxy(f"replica-{i}", logs, fake_upstream, "--enforcement", "filter", "--no-classifier",
                                       "--state-url", postgres.url, "--reload-seconds", "60",
                                       "--rate-limit-rpm", str(REQUESTS_PER_MINUTE),
                                       env={"GUARD_ADMIN_KEYS": ADMIN, "GUARD_API_KEYS": USER}))
        yield [replica.wait_ready() for replica in started]
    finally:
        stop_all(started)


def listing(replica) -> dict:
    return httpx.get(f"{replica.url}/v1/forget", headers=HEADERS, timeout=30).json()


def wait_for(condition, seconds: float = 30):
    """Poll until `condition()` is truthy (a deadline against hangs, not a speed target)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def target(name: str) -> dict:
    return {"id": name.lower(), "description": f"The person {name}.", "phrases": [name]}


def ask(replica, key: str = ADMIN) -> httpx.Response:
    """The fake upstream's innocent answer: "The capital of France is Paris, and 1879 was a year." """
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi #innocent"}]}
    return httpx.post(f"{replica.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                      timeout=30)


def says(replica) -> tuple[str, str | None]:
    """(text, finish reason) of the innocent answer."""
    reply = ask(replica).json()
    return reply["choices"][0]["message"]["content"], reply["choices"][0]["finish_reason"]


def database_minute(postgres) -> int:
    with psycopg.connect(postgres.url) as conn:
        return conn.execute("SELECT floor(extract(epoch FROM clock_timestamp()) / 60)::bigint").fetchone()[0]


def test_a_target_posted_to_one_replica_is_enforced_by_every_other_at_once(replicas):
    first, *others = replicas
    assert {listing(r)["enforced_version"] for r in replicas} == {1}  # the policy file's seed, once
    posted = httpx.post(f"{first.url}/v1/forget", json=target("Paris"), headers=HEADERS, timeout=30)
    assert posted.status_code == 201, posted.text
    version, started = posted.json()["version"], time.monotonic()
    for replica in others:
        wait_for(lambda: listing(replica)["enforced_version"] >= version)
    delay = time.monotonic() - started
    assert delay < 30  # polling every 60 s could not have done it: NOTIFY did (the figure: README)
    print(f"propagation to two replicas: {delay:.2f} s")
    for replica in replicas:  # "The capital of France is Paris, ..." is now cut before "Paris"
        text, finish = says(replica)
        assert finish == "content_filter" and "Paris" not in text


def test_a_keys_rate_limit_is_one_budget_across_the_replicas(replicas, postgres):
    minute = database_minute(postgres)
    statuses = [ask(replicas[i % 3], USER).status_code for i in range(REQUESTS_PER_MINUTE + 3)]
    allowed = statuses.count(200)
    if database_minute(postgres) == minute:  # a new minute would have reset the count meanwhile
        assert allowed == REQUESTS_PER_MINUTE  # not 3x: each replica alone would have allowed 30
        assert statuses[REQUESTS_PER_MINUTE:] == [429] * 3  # refused by every replica
    else:
        assert REQUESTS_PER_MINUTE <= allowed <= 2 * REQUESTS_PER_MINUTE
    assert all(httpx.get(f"{r.url}/health", timeout=30).json()["rate_limit_error"] is None for r in replicas)


def test_the_database_killed_mid_update_loses_nothing_acknowledged(replicas, postgres):
    first, second, third = replicas
    outcomes: dict[str, int] = {}
    stop = threading.Event()

    def post_many() -> None:
        for i in range(200):
            if stop.is_set():
                return
            name = f"Person{i}"
            try:
                outcomes[name] = httpx.post(f"{first.url}/v1/forget", json=target(name), headers=HEADERS,
                                            timeout=30).status_code
            except httpx.HTTPError:
                outcomes[name] = 0
    writer = threading.Thread(target=post_many)
    writer.start()
    try:
        wait_for(lambda: sum(s == 201 for s in outcomes.values()) >= 3)
        postgres.kill()
        wait_for(lambda: any(s == 503 for s in outcomes.values()))  # refused while the database is down
        down = listing(second)
        assert down["error"] and "unreachable" in down["error"]  # serving its last version, and saying so
        health = wait_for(lambda: (h := httpx.get(f"{second.url}/health", timeout=30).json())["policy_error"] and h)
        assert health["status"] == "ok" and "unreachable" in health["policy_error"]
        assert says(second)[1] == "content_filter"  # still guarded by what it enforced
        assert "alone" in httpx.get(f"{second.url}/health", timeout=30).json()["rate_limit_error"]  # and limited
        postgres.start()
        wait_for(lambda: sum(s == 201 for s in list(outcomes.values())[-3:]) == 3)  # writes go through again
        wait_for(lambda: says(second) and httpx.get(f"{second.url}/health", timeout=30).json()["rate_limit_error"] is None,
                 seconds=10)  # the rate limits back in the database (a request a poll: within the key's limit)
    finally:
        stop.set()
        writer.join()
    acknowledged = {name.lower() for name, status in outcomes.items() if status == 201}
    final = wait_for(lambda: (r := listing(third))["error"] is None and r["enforced_version"] == r["version"] and r)
    stored = {t["id"] for t in final["data"]}
    assert acknowledged <= stored  # nothing acknowledged was lost
    assert stored - acknowledged <= {"harry-potter", "paris"}  # nothing refused was written
    assert final["version"] == 2 + len(acknowledged)  # one version per acknowledged change, no gaps
    for replica in replicas:
        wait_for(lambda: listing(replica)["enforced_version"] == final["version"])
