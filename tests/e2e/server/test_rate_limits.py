"""Per-key rate limits: in one process's memory, and shared by replicas through a real PostgreSQL
server (the session's pgserver): one budget for all, charged all or nothing, and a replica that loses
the database counting alone meanwhile."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from server.state.policy_store import StoreError
from server.state.rate_limits import RateLimiter, SharedRateLimiter, rate_limiter


def charge(limiter: RateLimiter, who: str, tokens: int) -> float | None:
    return asyncio.run(limiter.charge(who, tokens))


def test_the_limiter_charges_nothing_it_refuses_and_says_when_the_window_resets():
    limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=10)
    assert charge(limiter, "k", 6) is None
    wait = charge(limiter, "k", 6)  # over the tokens: refused, and its request not counted
    assert wait is not None and 0 < wait <= 60
    assert charge(limiter, "k", 4) is None  # the second request: the refused one was not charged
    assert charge(limiter, "k", 0) is not None  # a third: over the requests
    assert charge(limiter, "other", 10) is None  # per key
    assert not RateLimiter().active and RateLimiter(tokens_per_minute=1).active


@pytest.fixture()
def replicas(postgres):
    """Two replicas' limiters on one database: 3 requests and 10 tokens a minute."""
    postgres.reset()
    opened = [SharedRateLimiter(postgres.url, requests_per_minute=3, tokens_per_minute=10) for _ in range(2)]
    yield opened
    for limiter in opened:
        limiter.close()


def database_minute(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT floor(extract(epoch FROM clock_timestamp()) / 60)::bigint").fetchone()[0]


def test_replicas_share_one_budget_charged_all_or_nothing(replicas, postgres):
    first, second = replicas
    minute = database_minute(postgres.url)
    assert charge(first, "k", 6) is None  # request 1: 6 tokens
    over_tokens = charge(second, "k", 6)  # 12 tokens on the other replica: refused, its request not counted
    assert charge(second, "k", 4) is None  # request 2: 10 tokens
    assert charge(first, "other", 10) is None  # per key
    third, fourth = charge(first, "k", 0), charge(second, "k", 0)
    if database_minute(postgres.url) == minute:  # a new minute would have reset the windows meanwhile
        assert over_tokens is not None and 0 < over_tokens <= 60
        assert third is None and fourth is not None  # three requests a minute, whichever replica counts them
    assert first.error is None and second.error is None


def test_concurrent_charges_from_many_replicas_never_exceed_the_limit(postgres):
    postgres.reset()
    limiters = [SharedRateLimiter(postgres.url, requests_per_minute=37) for _ in range(4)]
    try:
        minute = database_minute(postgres.url)
        with ThreadPoolExecutor(8) as pool:
            waits = list(pool.map(lambda i: limiters[i % 4].charge_in_database("k", 1), range(100)))
        windows = database_minute(postgres.url) - minute + 1
    finally:
        for limiter in limiters:
            limiter.close()
    allowed = sum(wait is None for wait in waits)
    assert allowed == 37 if windows == 1 else 37 <= allowed <= 37 * windows


def test_windows_before_the_last_are_swept(replicas, postgres):
    first, _ = replicas
    charge(first, "k", 1)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("INSERT INTO guard_rate_windows VALUES ('old', 'requests', 1, 5)")
        first._swept = None  # as a replica whose last sweep was a minute ago
        charge(first, "k2", 1)
        assert conn.execute("SELECT count(*) FROM guard_rate_windows WHERE key_id = 'old'").fetchone()[0] == 0


def test_a_replica_that_loses_the_database_counts_alone_then_comes_back(replicas, postgres):
    first, _ = replicas
    assert charge(first, "k", 1) is None
    postgres.kill()
    try:
        assert charge(first, "k", 1) is None  # still served, now counted in its memory
        assert first.error and "alone" in first.error
        assert [charge(first, "k", 1) is None for _ in range(3)] == [True, True, False]  # limited still
    finally:
        postgres.start()
    deadline = time.monotonic() + 30
    while first.error is not None:  # it tries the database again every RETRY_SECONDS
        assert time.monotonic() < deadline, "the replica did not come back to the database"
        charge(first, "k3", 0)
        time.sleep(0.1)
    assert charge(first, "k", 1) is None  # the database's count: one request before the outage


def test_memory_unless_a_database_and_a_limit(postgres):
    assert type(rate_limiter(5, 0)) is RateLimiter
    assert type(rate_limiter(0, 0, postgres.url)) is RateLimiter  # nothing to count
    shared = rate_limiter(5, 0, postgres.url)
    assert isinstance(shared, SharedRateLimiter)
    shared.close()
    with pytest.raises(StoreError, match="--state-url"):  # unreachable at start-up: the server does not start
        rate_limiter(5, 0, "postgresql://guard@127.0.0.1:1/guard")
