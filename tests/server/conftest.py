"""Session-wide servers of the end-to-end tests: started once, shared by every module that asks."""

from __future__ import annotations

import pytest

from tests.server.servers import ADMIN_KEY, POLICY, USER_KEY, Server, vllm_serve


@pytest.fixture(scope="session")
def servers(tmp_path_factory, model_dir):
    """The guarded server runs as in production: keys, a state dir, an audit log. The reference is a
    plain `vllm serve` of the same model: what the guard must match wherever no target is touched,
    and the upstream of the bias and filter proxies (whose last test kills it; see `plain`)."""
    logs = tmp_path_factory.mktemp("servers")
    guarded = Server("guarded", logs, "--policy", POLICY, "--state-dir", str(logs / "state"),
                     "--audit-log", str(logs / "audit.jsonl"),
                     env={"GUARD_API_KEYS": USER_KEY, "GUARD_ADMIN_KEYS": ADMIN_KEY}, key=USER_KEY)
    plain = vllm_serve("vllm-plain", logs, model_dir)
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


@pytest.fixture()
def plain(servers):
    """The plain reference, started again if a fault test killed it (module fixtures: use
    `servers[1].ensure_running()`)."""
    return servers[1].ensure_running()
