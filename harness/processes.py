"""Server processes, as the benchmarks and the end-to-end tests start them: a command that takes
`--port`, its output in a log file, ready once its `/health` answers 200, and stopped with every
process it started (it runs in a session of its own: an engine's workers go with it)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

import httpx


class ServerFailed(RuntimeError):
    """The server exited, or was not ready in time; the message holds the end of its log."""


def free_port() -> int:
    """A port free now and below the OS's ephemeral range. A port the OS hands out (bind to 0) is
    released before the server binds it, and meanwhile the server's own engine may be handed the same
    one for its internal sockets: a test failed once with "address already in use" that way."""
    try:
        lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    upper = lowest_ephemeral if lowest_ephemeral > 11000 else 65536  # no room below it: anywhere high
    rng = random.Random()
    while True:
        port = rng.randrange(10000, upper)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class ServerProcess:
    """`command --port PORT` on a free port, started at once; a context manager that waits for it to
    be ready and stops it."""

    def __init__(self, command: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._argv, self._env = [*command, "--port", str(self.port)], {**os.environ, **(env or {})}
        self._start()

    def _start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self._env)

    def wait_ready(self, timeout: float = 300) -> "ServerProcess":
        """Polls `/health` until it answers 200; ServerFailed if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self._argv[0]} exited ({self.proc.returncode}):\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise ServerFailed(f"not ready after {timeout:.0f} s:\n{self._log_tail()}")

    def ensure_running(self) -> "ServerProcess":
        """Ready: waited for, and started again if it was killed."""
        if self.proc.poll() is not None:
            self._start()
        return self.wait_ready()

    def restart(self) -> None:
        """Crash it (SIGKILL) and start the same command on the same port, as a supervisor would."""
        self.kill()
        self._start()
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within 30 s."""
        stop_all([self])

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def __enter__(self) -> "ServerProcess":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all(servers: Sequence[ServerProcess]) -> None:
    """Stop every one of `servers` at once: SIGTERM to each, then SIGKILL to any not ended within 30 s."""
    running = [server for server in servers if server.proc.poll() is None]
    for server in running:
        os.killpg(server.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for server in running:
        try:
            server.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
