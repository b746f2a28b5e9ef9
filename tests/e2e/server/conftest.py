"""Session-wide servers of the end-to-end tests: started once, together, shared by every module that
asks. Every engine runs eager (tests/support/servers.py, EAGER)."""

from __future__ import annotations

import sys

import pytest

from harness.processes import stop_all
from tests.support.servers import (ADMIN_KEY, EAGER, POLICY, PROCESSOR, USER_KEY, VLLM_CPU_BLOCKS, Server, guard_proxy,
                                  vllm_serve)

FILTER_KEY, FILTER_ADMIN_KEY = "unused", "admin-key"  # the filter proxy runs with keys (the openai client's "unused")


def _start_guarded(tmp_path_factory) -> Server:
    """The guarded server runs as in production: keys, a state dir, an audit log; it reads the Hermes
    tool-call format, as the plain reference does."""
    logs = tmp_path_factory.mktemp("servers")
    return Server("guarded", logs, "--policy", POLICY, EAGER, *VLLM_CPU_BLOCKS, "--tool-call-parser", "hermes",
                  "--state-dir", str(logs / "state"), "--audit-log", str(logs / "audit.jsonl"),
                  env={"GUARD_API_KEYS": USER_KEY, "GUARD_ADMIN_KEYS": ADMIN_KEY}, key=USER_KEY)


@pytest.fixture(scope="session")
def servers(tmp_path_factory, model_dir):
    """The guarded server; the reference: a plain `vllm serve` of the same model with vLLM's defaults
    (its JSON tool-call path on: it changes no answer without tools),
    what the guard must match wherever no target is touched, and the upstream of the bias and filter
    proxies (a fault test kills it; see `plain`); and the plugin `vllm serve` (the guard's logits
    processor), the full proxy's upstream. Only the guarded server is waited for here."""
    guarded = _start_guarded(tmp_path_factory)
    started = [guarded]
    try:
        logs = guarded.log.parent
        # vLLM's JSON tool-call path (not its model-specific structural tags): the one the guard's matches.
        started.append(vllm_serve("vllm-plain", logs, model_dir, "--enable-auto-tool-choice", "--tool-call-parser",
                                  "hermes", env={"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}))
        started.append(vllm_serve("vllm-plugin", logs, model_dir, "--logits-processors", PROCESSOR))
        guarded.wait_ready()
        yield tuple(started)
    finally:
        stop_all(started)


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
    started = {}
    try:
        upstream = servers[1].ensure_running()
        started["bias"] = guard_proxy("proxy-bias", logs, upstream, "--tokenizer", model_dir,
                                      "--audit-log", str(logs / "audit.jsonl"))
        started["filter"] = guard_proxy("proxy-filter", logs, upstream, "--enforcement", "filter",
                                        env={"GUARD_API_KEYS": FILTER_KEY, "GUARD_ADMIN_KEYS": FILTER_ADMIN_KEY})
        # The full proxy probes its upstream at start-up (for a bounded time): start it once the plugin is up.
        started["full"] = guard_proxy("proxy-full", logs, servers[2].ensure_running(), "--tokenizer", model_dir,
                                      "--tool-call-parser", "hermes")
        for proxy in started.values():
            proxy.wait_ready()
        yield started
    finally:
        stop_all(list(started.values()))


class Postgres:
    """A real PostgreSQL server (pgserver: PostgreSQL's own binaries, from PyPI) in a folder of the
    test session, reached over a Unix socket: `url`, and a crash (`kill`) and a restart (`start`)."""

    def __init__(self, folder):
        import pgserver

        self.server = pgserver.get_server(folder, cleanup_mode="stop")
        self.url = self.server.get_uri()

    def reset(self) -> None:
        """No policy store and no rate-limit counters in it."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS guard_policy_versions, guard_rate_windows")

    def kill(self) -> None:
        """SIGKILL to the postmaster, as a crash; its backends end with it."""
        import psutil

        postmaster = psutil.Process(self.server.get_pid())
        processes = [postmaster, *postmaster.children(recursive=True)]
        postmaster.kill()
        psutil.wait_procs(processes, timeout=30)

    def start(self) -> None:
        self.server.ensure_postgres_running()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.server.cleanup()


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory):
    """The deliberately misbehaving OpenAI-compatible upstream (harness/fake_upstream.py), ready."""
    server = Server("fake-upstream", tmp_path_factory.mktemp("fake-upstream"),
                    command=(sys.executable, "-m", "harness.fake_upstream"))
    try:
        yield server.wait_ready(30)
    finally:
        server.stop()
