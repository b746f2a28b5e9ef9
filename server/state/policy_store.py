"""The policy store: every version of the policy, in SQLite in the server's `--state-dir`, or in a
shared PostgreSQL database (`--state-url`, server.state.postgres_store) for replicas on many hosts.

Each change (a seed from the policy file, a target added or deleted, a file edit) writes the whole
new policy as one row in one transaction, so a crash during an update leaves the previous version
intact and current. The current policy is the newest row. Several server processes may share one
store: each follows `version()` and rebuilds when it moves (with PostgreSQL, told at once by
LISTEN/NOTIFY). Without a state dir or URL the store lives in memory: run-time changes work but do
not survive a restart.

`Store` holds what a change means (seed, replace, add, delete); a backend says how one is written
(`_write`: read the current version and write the next in one transaction) and read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from guard.policy import Policy, PolicyError, Target, parse_policy

FILE_NAME = "policy.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version   INTEGER PRIMARY KEY AUTOINCREMENT,
    created   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    change    TEXT NOT NULL,   -- what made this version: "seed from FILE", "add TARGET", ...
    key_id    TEXT NOT NULL,   -- who: an API key id, or "file"
    policy    TEXT NOT NULL    -- the whole policy as JSON
)
"""


class StoreError(ValueError):
    """A store that cannot be opened, read or written; the message names the file or database."""


class TargetExists(ValueError):
    pass


class TargetNotFound(LookupError):
    pass


@dataclass(frozen=True)
class PolicyVersion:
    version: int  # 0: the store is empty
    policy: Policy
    created: str = ""
    change: str = ""


class Store:
    """What a change of the policy means, over a backend's `_write`, `current`, `version` and `history`."""

    def version(self) -> int:
        """The current version number: cheap, for polling."""
        raise NotImplementedError

    def current(self) -> PolicyVersion:
        raise NotImplementedError

    def history(self) -> list[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def listen(self, changed: Callable[[], None]) -> None:
        """Call `changed()` (from any thread) whenever another process writes a version, where the
        backend can tell; the server polls besides."""

    def _write(self, change: Callable[[PolicyVersion], Policy | None], description: str, key_id: str) -> int | None:
        """Read the current policy and write `change(current)` as the next version, in one transaction
        that other processes' writes wait for. `change` returns None to write nothing."""
        raise NotImplementedError

    def seed(self, policy: Policy, source: str) -> int | None:
        """Write `policy` as the first version if the store is empty; the new version, or None."""
        return self._write(lambda current: None if current.version else policy, f"seed from {source}", "file")

    def replace(self, policy: Policy, source: str) -> int | None:
        """A new version with `policy` as a whole (a policy file edit); None if it is the current one."""
        return self._write(lambda current: None if current.policy == policy else policy, f"replace from {source}",
                           "file")

    def add(self, target: Target, key_id: str) -> int:
        def added(current: PolicyVersion) -> Policy:
            if target.id in current.policy.target_ids:
                raise TargetExists(target.id)
            return Policy(targets=(*current.policy.targets, target))
        return self._write(added, f"add {target.id}", key_id)

    def delete(self, target_id: str, key_id: str) -> int:
        def deleted(current: PolicyVersion) -> Policy:
            if target_id not in current.policy.target_ids:
                raise TargetNotFound(target_id)
            return Policy(targets=tuple(t for t in current.policy.targets if t.id != target_id))
        return self._write(deleted, f"delete {target_id}", key_id)


def policy_version(version: int, policy_json: str, created: str, change: str, where: str) -> PolicyVersion:
    """A stored row as a PolicyVersion; StoreError naming `where` if its policy is unreadable."""
    try:
        policy = parse_policy(json.loads(policy_json), source=f"{where} version {version}")
    except (json.JSONDecodeError, PolicyError) as exc:
        raise StoreError(f"the policy store {where}: version {version} is unreadable ({exc})") from None
    return PolicyVersion(version, policy, created, change)


class PolicyStore(Store):
    """SQLite, in `--state-dir` (or in memory)."""

    def __init__(self, state_dir: Path | None):
        self.path = Path(state_dir) / FILE_NAME if state_dir is not None else None
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path or ":memory:", timeout=10, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL" if self.path else "PRAGMA journal_mode=MEMORY")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"--state-dir: cannot open the policy store {self.path}: {exc}") from None
        self._lock = threading.Lock()  # one connection, used from the event loop and rebuild threads

    def close(self) -> None:
        self._db.close()

    def version(self) -> int:
        with self._lock:
            return self._db.execute("SELECT coalesce(max(version), 0) FROM versions").fetchone()[0]

    def current(self) -> PolicyVersion:
        with self._lock:
            return self._current()

    def _current(self) -> PolicyVersion:
        row = self._db.execute("SELECT version, policy, created, change FROM versions "
                               "ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return PolicyVersion(0, Policy())
        return policy_version(*row, where=str(self.path or "store"))

    def history(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT version, created, change, key_id FROM versions ORDER BY version").fetchall()
        return [{"version": v, "created": c, "change": ch, "key_id": k} for v, c, ch, k in rows]

    def _write(self, change, description: str, key_id: str) -> int | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                policy = change(self._current())
                if policy is None:
                    self._db.execute("ROLLBACK")
                    return None
                cursor = self._db.execute("INSERT INTO versions (change, key_id, policy) VALUES (?, ?, ?)",
                                          (description, key_id, policy.model_dump_json()))
                self._db.execute("COMMIT")
                return cursor.lastrowid
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
