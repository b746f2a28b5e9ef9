"""Session-wide servers of the end-to-end tests: started once, shared by every module that asks."""

from __future__ import annotations

import pytest

from tests.server.servers import ADMIN_KEY, POLICY, USER_KEY, Server


@pytest.fixture(scope="session")
def servers(tmp_path_factory, model_dir):
    """The guarded server runs as in production: keys, a state dir, an audit log."""
    logs = tmp_path_factory.mktemp("servers")
    guarded = Server("guarded", logs, "--policy", POLICY, "--state-dir", str(logs / "state"),
                     "--audit-log", str(logs / "audit.jsonl"),
                     env={"GUARD_API_KEYS": USER_KEY, "GUARD_ADMIN_KEYS": ADMIN_KEY}, key=USER_KEY)
    plain = Server("plain", logs)
    try:
        guarded.wait_ready()
        plain.wait_ready()
        yield guarded, plain
    finally:
        guarded.stop()
        plain.stop()


@pytest.fixture(scope="session")
def guarded(servers):
    return servers[0]


@pytest.fixture(scope="session")
def plain(servers):
    return servers[1]
