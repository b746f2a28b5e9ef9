"""Per-key rate limits: requests, and the completion tokens they ask for, in fixed one-minute windows.

One process counts in its own memory (`limits`). Replicas given `--state-url` count in the shared
PostgreSQL database instead (`SharedRateLimiter`), so N replicas allow a key its limit once, not N
times. A request is charged for every limit or for none: a refused one costs nothing.

A replica that cannot reach the database meanwhile counts in its own memory, at the full limit (its
own share of the traffic is still limited, never unlimited), says so in /health (`rate_limit_error`),
and tries the database again every `RETRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from limits import RateLimitItemPerMinute, storage, strategies

from server.state.policy_store import StoreError
from server.state.postgres_store import first_line

log = logging.getLogger("guard.auth")
WINDOW_SECONDS = 60
RETRY_SECONDS = 1.0


class RateLimiter:
    """Per key id: requests and tokens per minute, counted in this process's memory; 0 disables a limit."""
    error: str | None = None  # why the limits are not counted where they should be

    def __init__(self, requests_per_minute: int = 0, tokens_per_minute: int = 0):
        self.limits = {kind: n for kind, n in (("requests", requests_per_minute), ("tokens", tokens_per_minute)) if n}
        self._memory = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        self._items = {kind: RateLimitItemPerMinute(n, namespace=kind) for kind, n in self.limits.items()}

    @property
    def active(self) -> bool:
        return bool(self.limits)

    def costs(self, tokens: int) -> dict[str, int]:
        return {kind: 1 if kind == "requests" else tokens for kind in self.limits}

    async def charge(self, who: str, tokens: int) -> float | None:
        """Charge one request of `tokens`; None if allowed, else the seconds until the window resets."""
        return self.charge_in_memory(who, tokens)

    def charge_in_memory(self, who: str, tokens: int) -> float | None:
        """No await between testing and charging: one event loop, so nothing comes in between."""
        costs = [(self._items[kind], cost) for kind, cost in self.costs(tokens).items()]
        for item, cost in costs:
            if not self._memory.test(item, who, cost=cost):
                return max(self._memory.get_window_stats(item, who).reset_time - time.time(), 0.0)
        for item, cost in costs:
            self._memory.hit(item, who, cost=cost)
        return None

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE UNLOGGED TABLE IF NOT EXISTS guard_rate_windows (  -- counters: not worth a write-ahead log
    key_id        TEXT NOT NULL,
    kind          TEXT NOT NULL,  -- requests, tokens
    window_start  BIGINT NOT NULL,  -- the database's clock, in minutes since 1970: one clock for every replica
    used          BIGINT NOT NULL,
    PRIMARY KEY (key_id, kind, window_start)
)
"""
# Charged only while the total stays within the limit; the row's lock orders concurrent replicas.
_CHARGE = """
INSERT INTO guard_rate_windows AS w (key_id, kind, window_start, used) VALUES (%s, %s, %s, %s)
ON CONFLICT (key_id, kind, window_start) DO UPDATE SET used = w.used + excluded.used
WHERE w.used + excluded.used <= %s
RETURNING used
"""
_SCHEMA_LOCK = 0x6775617265  # "guare": replicas starting at once


class SharedRateLimiter(RateLimiter):
    """The same limits counted in a PostgreSQL database that every replica shares (`--state-url`)."""

    def __init__(self, url: str, requests_per_minute: int = 0, tokens_per_minute: int = 0,
                 connect_timeout: float = 2.0):
        import psycopg

        super().__init__(requests_per_minute, tokens_per_minute)
        self._psycopg, self.url, self._timeout = psycopg, url, connect_timeout
        self._lock = threading.Lock()
        self._conn = None
        self._retry_at = 0.0
        self._swept = None  # the window whose older ones were last deleted
        try:
            with self._lock, self._connection().transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._conn.execute(_SCHEMA)
        except psycopg.Error as exc:  # at start-up: the server does not start
            raise StoreError(f"--state-url: the rate limits' table cannot be made ({first_line(exc)})") from None

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._psycopg.connect(self.url, autocommit=True,
                                               connect_timeout=max(1, round(self._timeout)))
        return self._conn

    async def charge(self, who: str, tokens: int) -> float | None:
        if time.monotonic() < self._retry_at:
            return self.charge_in_memory(who, tokens)
        try:
            wait = await asyncio.to_thread(self.charge_in_database, who, tokens)
        except self._psycopg.Error as exc:
            if self.error is None:
                log.warning("rate limits: the database is unreachable (%s); counting in this replica's memory "
                            "meanwhile, trying again every %.0f s", first_line(exc), RETRY_SECONDS)
            self.error = f"--state-url: rate limits counted by this replica alone ({first_line(exc)})"
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return self.charge_in_memory(who, tokens)
        if self.error is not None:
            log.info("rate limits: counted in the database again")
            self.error = None
        return wait

    def charge_in_database(self, who: str, tokens: int) -> float | None:
        """One transaction: every limit charged, or none (psycopg.Rollback); raises psycopg.Error."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                now = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
                window = int(now // WINDOW_SECONDS)
                wait = (window + 1) * WINDOW_SECONDS - now
                for kind, cost in self.costs(tokens).items():
                    limit = self.limits[kind]
                    if cost > limit or conn.execute(_CHARGE, (who, kind, window, cost, limit)).fetchone() is None:
                        raise self._psycopg.Rollback()
                wait = None
            if self._swept != window:  # at most once a minute: the windows before the last one
                conn.execute("DELETE FROM guard_rate_windows WHERE window_start < %s", (window - 1,))
                self._swept = window
            return wait

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def rate_limiter(requests_per_minute: int, tokens_per_minute: int, shared_url: str | None = None) -> RateLimiter:
    """In the shared database where there is one and a limit to count; in memory otherwise."""
    if shared_url and (requests_per_minute or tokens_per_minute):
        return SharedRateLimiter(shared_url, requests_per_minute, tokens_per_minute)
    return RateLimiter(requests_per_minute, tokens_per_minute)
