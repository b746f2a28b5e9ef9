"""The policy a server enforces, kept up with its policy store (and its policy file, if any).

A change (a target added or deleted over the admin API, by this process or another sharing the
store, who may say so at once through PostgreSQL's NOTIFY, or an edit of the policy file) is rebuilt
in a worker thread: classifier training, forget items, span warm-up. The previous restrictions keep serving meanwhile; the swap is one attribute
assignment, so a request classified before it finishes under the restriction it got. A rebuild that
fails, or a store that cannot be reached, leaves the previous restrictions in force, reported in
`error` (GET /v1/forget, /health); a version older than the enforced one is never enforced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

from guard.policy import Policy, PolicyError, load_policy
from guard.restriction import Restrictions
from server.state.policy_store import Store, StoreError

log = logging.getLogger("guard.policy")

Build = Callable[[Policy, int], Restrictions]  # (policy, store version) -> its restrictions


class LivePolicy:
    def __init__(self, store: Store, poll_seconds: float, policy_file: Path | None = None):
        """`poll_seconds`: how often the store (and the file) are checked for changes; 0: only this
        process's own admin changes are picked up."""
        self.store, self.poll_seconds, self.policy_file = store, poll_seconds, policy_file
        self._build: Build | None = None
        self.restrictions: Restrictions | None = None  # None until `start()`
        self.error: str | None = None  # why the newest version is not enforced, if it is not
        self._file_mtime = _mtime(policy_file)
        self._wake: asyncio.Event | None = None  # made in `start()`, on the loop that serves
        self._rebuilding: asyncio.Lock | None = None

    @property
    def enforced_version(self) -> int:
        return self.restrictions.version if self.restrictions is not None else 0

    async def start(self, build: Build) -> None:
        """Build the current version's restrictions with `build`, and later ones the same way
        (at start-up; errors propagate)."""
        self._build = build
        self._wake, self._rebuilding = asyncio.Event(), asyncio.Lock()
        loop = asyncio.get_running_loop()
        self.store.listen(lambda: loop.call_soon_threadsafe(self._wake.set))  # another replica's change, at once
        current = self.store.current()
        self.restrictions = await asyncio.to_thread(self._build, current.policy, current.version)
        log.info("enforcing policy version %d: %d target(s)", current.version, len(current.policy.targets))

    def changed(self) -> None:
        """This process just changed the store: rebuild now rather than at the next poll."""
        self._wake.set()

    async def follow(self) -> None:
        """Run for the server's life: rebuild whenever the store or the policy file moves."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds or None)
            except TimeoutError:
                pass
            self._wake.clear()
            await asyncio.to_thread(self._import_file_edit)
            await self.refresh()

    async def refresh(self) -> None:
        """Enforce the store's newest version if it is not yet enforced."""
        async with self._rebuilding:
            try:
                # Off the event loop: the store's lock may be held by a slow admin write.
                newest = await asyncio.to_thread(self.store.version)
                if newest == self.enforced_version:
                    self.error = None
                    return
                if newest < self.enforced_version:  # a store restored from an older backup: never go back
                    raise StoreError(f"the store's newest version is {newest}, older than the enforced one")
                current = await asyncio.to_thread(self.store.current)
                started = time.monotonic()
                restrictions = await asyncio.to_thread(self._build, current.policy, current.version)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the previous version keeps serving
                self.error = f"the newest policy version is not enforced: {exc}"
                log.error("%s; version %d stays in force", self.error, self.enforced_version)
                return
            self.restrictions, self.error = restrictions, None
            log.info("enforcing policy version %d: %d target(s) (rebuilt in %.1f s)", current.version,
                     len(current.policy.targets), time.monotonic() - started)

    def _import_file_edit(self) -> None:
        """An edit of the policy file replaces the whole policy, as a new version; a broken edit is
        logged and ignored."""
        if self.policy_file is None:
            return
        mtime = _mtime(self.policy_file)
        if mtime == self._file_mtime:
            return
        try:
            version = self.store.replace(load_policy(self.policy_file), str(self.policy_file))
        except StoreError as exc:  # tried again at the next poll
            log.error("policy file edit not stored yet: %s", exc)
            return
        except PolicyError as exc:
            self._file_mtime = mtime
            log.error("policy file edit not applied, the current policy stays: %s", exc)
            return
        self._file_mtime = mtime
        if version is not None:
            log.info("policy file %s changed: policy version %d", self.policy_file, version)


def _mtime(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None
