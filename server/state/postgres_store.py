"""The policy store in a shared PostgreSQL database (`--state-url postgresql://...`): replicas on
many hosts enforce one policy.

The same versioned rows as the SQLite store (server.state.policy_store), in the table `guard_policy_versions`.
A change is one transaction that takes the table's write lock (so concurrent writers queue, as
SQLite's BEGIN IMMEDIATE does), inserts the next version and sends `NOTIFY guard_policy` with its
number, which PostgreSQL delivers on commit: every replica that LISTENs hears of it at once and
rebuilds; polling stays as the fallback. A lost connection raises StoreError (the server keeps
enforcing its last version and says so) and is opened again on the next call; the listener
reconnects on its own.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Callable

from guard.policy import Policy
from server.state.policy_store import PolicyVersion, Store, StoreError, policy_version

log = logging.getLogger("guard.policy")
CHANNEL = "guard_policy"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS guard_policy_versions (
    version   BIGINT PRIMARY KEY,  -- the newest + 1, under the table's write lock: no gaps, even after a crash
    created   TIMESTAMPTZ NOT NULL DEFAULT now(),
    change    TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    policy    TEXT NOT NULL
)
"""
RECONNECT_SECONDS = 0.5
_SCHEMA_LOCK = 0x6775617264  # "guard": concurrent CREATE TABLE IF NOT EXISTS can collide


class PostgresStore(Store):
    def __init__(self, url: str, connect_timeout: float = 5.0):
        import psycopg  # only a server given --state-url needs it

        self._psycopg, self.url, self._timeout = psycopg, url, connect_timeout
        self._lock = threading.Lock()  # one connection, used from the event loop's threads
        self._conn = None
        self._stop = threading.Event()
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))  # replicas starting at once
            conn.execute(_SCHEMA)

    def _connect(self):
        return self._psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self._timeout)))

    @contextmanager
    def _connection(self):
        """The store's connection, opened again if it was lost; StoreError if the database fails."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                yield self._conn
            except self._psycopg.Error as exc:
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                raise StoreError(f"--state-url: the policy store is unreachable ({first_line(exc)})") from None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def version(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT coalesce(max(version), 0) FROM guard_policy_versions").fetchone()[0]

    def current(self) -> PolicyVersion:
        with self._connection() as conn:
            return self._current(conn)

    def _current(self, conn) -> PolicyVersion:
        row = conn.execute("SELECT version, policy, created, change FROM guard_policy_versions "
                           "ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return PolicyVersion(0, Policy())
        version, policy, created, change = row
        return policy_version(version, policy, created.isoformat(), change, where="database")

    def history(self) -> list[dict]:
        with self._connection() as conn:
            rows = conn.execute("SELECT version, created, change, key_id FROM guard_policy_versions "
                                "ORDER BY version").fetchall()
        return [{"version": v, "created": c.isoformat(), "change": ch, "key_id": k} for v, c, ch, k in rows]

    def _write(self, change, description: str, key_id: str) -> int | None:
        with self._connection() as conn:
            with conn.transaction():
                conn.execute("LOCK TABLE guard_policy_versions IN EXCLUSIVE MODE")
                policy = change(self._current(conn))
                if policy is None:
                    return None
                version = conn.execute(
                    "INSERT INTO guard_policy_versions (version, change, key_id, policy) SELECT "
                    "coalesce(max(version), 0) + 1, %s, %s, %s FROM guard_policy_versions RETURNING version",
                    (description, key_id, policy.model_dump_json())).fetchone()[0]
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))  # delivered on commit
            return version

    def listen(self, changed: Callable[[], None]) -> None:
        threading.Thread(target=self._listen, args=(changed,), name="guard-policy-listen", daemon=True).start()

    def _listen(self, changed: Callable[[], None]) -> None:
        """LISTEN for new versions until the store is closed, reconnecting when the database goes away
        (and calling `changed()` on reconnecting: versions may have been written meanwhile)."""
        connected = False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    connected = True
                    changed()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            changed()
            except self._psycopg.Error as exc:
                if connected:  # the server finds out at once, and says so
                    log.warning("policy store: lost the database (%s); trying again every %.1f s",
                                first_line(exc), RECONNECT_SECONDS)
                    changed()
                connected = False
                self._stop.wait(RECONNECT_SECONDS)


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
