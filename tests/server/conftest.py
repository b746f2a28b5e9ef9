"""Session-wide servers of the end-to-end tests: started once, shared by every module that asks.

`guard serve` starts first, as soon as the tests are collected (when any end-to-end server test is
selected), so that its first start, which compiles the model into the session's vLLM cache, runs
beside the fast tests; every `vllm serve` starts after it and loads the compiled model from there
(tests/server/servers.py: VLLM_ENV).
"""

from __future__ import annotations

import pytest

from tests.server.servers import ADMIN_KEY, POLICY, PROCESSOR, USER_KEY, Server, guard_proxy, vllm_serve

FILTER_KEY, FILTER_ADMIN_KEY = "unused", "admin-key"  # the filter proxy runs with keys (the openai client's "unused")
_started_early: dict[str, Server] = {}


def _start_guarded(tmp_path_factory) -> Server:
    """The guarded server runs as in production: keys, a state dir, an audit log."""
    logs = tmp_path_factory.mktemp("servers")
    return Server("guarded", logs, "--policy", POLICY, "--state-dir", str(logs / "state"),
                  "--audit-log", str(logs / "audit.jsonl"),
                  env={"GUARD_API_KEYS": USER_KEY, "GUARD_ADMIN_KEYS": ADMIN_KEY}, key=USER_KEY)


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("integration") and item.nodeid.startswith("tests/server/")
           for item in session.items):
        from guard.models import prepare_default_model

        prepare_default_model(progress=False)  # what the server would otherwise do first itself
        _started_early["guarded"] = _start_guarded(session.config._tmp_path_factory)


def pytest_sessionfinish(session):
    for server in _started_early.values():  # started, but no test asked for it (deselected, or failed early)
        server.stop()


@pytest.fixture(scope="session")
def servers(tmp_path_factory, model_dir):
    """The guarded server (started early, see above), and the reference: a plain `vllm serve` of the
    same model with vLLM's defaults, what the guard must match wherever no target is touched, and the
    upstream of the bias and filter proxies (a fault test kills it; see `plain`). Only the guarded
    server is waited for here."""
    guarded = _started_early.pop("guarded", None) or _start_guarded(tmp_path_factory)
    logs = guarded.log.parent
    started = [guarded]
    try:
        guarded.wait_ready()
        started.append(vllm_serve("vllm-plain", logs, model_dir))
        yield guarded, started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def guarded(servers):
    return servers[0]


@pytest.fixture()
def plain(servers):
    """The plain reference, ready (started again if a fault test killed it; module fixtures: use
    `servers[1].ensure_running()`)."""
    return servers[1].ensure_running()


@pytest.fixture(scope="session")
def proxies(tmp_path_factory, model_dir, servers):
    """`guard proxy` at every level: full in front of a `vllm serve` that runs the guard's processor,
    bias (told the tokenizer) and filter (told nothing, with keys) in front of the plain reference."""
    logs = tmp_path_factory.mktemp("proxies")
    plugin = vllm_serve("vllm-plugin", logs, model_dir, "--logits-processors", PROCESSOR)
    started = {"full": guard_proxy("proxy-full", logs, plugin, "--tokenizer", model_dir)}  # waits for the plugin
    try:
        upstream = servers[1].ensure_running()
        started["bias"] = guard_proxy("proxy-bias", logs, upstream, "--tokenizer", model_dir,
                                      "--audit-log", str(logs / "audit.jsonl"))
        started["filter"] = guard_proxy("proxy-filter", logs, upstream, "--enforcement", "filter",
                                        env={"GUARD_API_KEYS": FILTER_KEY, "GUARD_ADMIN_KEYS": FILTER_ADMIN_KEY})
        for proxy in [plugin, *started.values()]:
            proxy.wait_ready()
        yield started
    finally:
        for proxy in started.values():
            proxy.stop()
        plugin.stop()
