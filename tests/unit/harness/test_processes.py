"""The server-process helper the benchmarks and the end-to-end tests share, on a real process."""

from __future__ import annotations

import sys

import httpx
import pytest

from harness.processes import ServerFailed, ServerProcess

# A server that takes `--port` and answers /health with 200, as ours do.
HEALTHY = (sys.executable, "-c", """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
""")


def test_ready_once_health_answers_then_stopped_with_its_children(tmp_path):
    with ServerProcess(HEALTHY, tmp_path / "server.log") as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        server.restart()  # killed, and started again on the same port
        assert httpx.get(f"{server.url}/health").status_code == 200
    assert server.proc.poll() is not None


def test_a_server_that_exits_fails_with_the_end_of_its_log(tmp_path):
    command = (sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)")
    with pytest.raises(ServerFailed, match="exited \\(3\\)[\\s\\S]*no model here"):
        with ServerProcess(command, tmp_path / "server.log"):
            pass


def test_free_ports_are_below_the_range_the_os_hands_out():
    """The OS gives an engine's internal sockets ports from its ephemeral range: a port picked there
    and released could be taken again before the server binds it."""
    from pathlib import Path

    from harness.processes import free_port

    lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert all(10000 <= port < lowest for port in ports)
