"""A fleet on one machine: N `guard proxy` replicas over M `vllm serve` upstreams, sharing one
PostgreSQL policy store, with clients spread over the proxies round robin (as a load balancer would).

    python -m benchmarks.fleet [--proxies 3] [--upstreams 2] [--clients 8] [--seconds 60] [--out bench-results]

Under a steady closed-loop load it measures:
- how requests spread: per proxy (the clients' round robin) and per upstream (each upstream's own
  count of finished requests, `vllm:request_success_total` in its /metrics; a guarded answer that is
  rewound asks its upstream more than once);
- propagation: a target posted to one proxy, the time until every other one enforces its version,
  and then each proxy asked the question whose answer names it;
- an upstream killed (SIGKILL) at mid-run, while it is generating: the requests that failed, by
  status, against those running on it when it died, and whether the proxies then send everything
  to the survivors.
The upstreams run the guard's logits processor (the proxies' `full` level), eager, in 32-token cache
blocks as `guard serve` does on a CPU. PostgreSQL comes from the `pgserver` wheel (the `test` extra)
unless `--state-url` names one. Writes fleet.json and every server's log (fleet-logs/) into --out, and
prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from tqdm import tqdm

from harness.processes import ServerProcess, stop_all
from runtime.models import resolve_model

PROCESSOR = "vllm_guard.processor:GuardLogitsProcessor"
USER, ADMIN = "fleet-user-key", "fleet-admin-key"
QUESTIONS = ["Who wrote the Harry Potter books?", "What is the capital of France?", "Who founded Microsoft?",
             "Describe the school Harry Potter attends.", "Explain photosynthesis briefly.",
             "Write a short poem about the sea.", "Who is Harry Potter's greatest enemy?", "How do vaccines work?"]
NEW_TARGET = {"id": "tokyo", "description": "The city of Tokyo.", "phrases": ["Tokyo"]}
NEW_TARGET_QUESTION = "What is the capital of Japan?"  # asked on each proxy before the target and after


def start_fleet(args, logs: Path, state_url: str) -> tuple[list[ServerProcess], list[ServerProcess]]:
    model = str(resolve_model(None))
    upstreams = [ServerProcess([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                                "--max-model-len", "2048", "--enforce-eager", "--block-size", "32",
                                "--logits-processors", PROCESSOR, "--logprobs-mode", "processed_logprobs"],
                               logs / f"upstream-{i}.log", env={"VLLM_CPU_KVCACHE_SPACE": "1"})
                 for i in range(args.upstreams)]
    for upstream in tqdm(upstreams, desc="upstreams (vllm serve)", unit="server"):
        upstream.wait_ready(600)
    urls = ",".join(f"{u.url}/v1" for u in upstreams)
    proxies = [ServerProcess([sys.executable, "-m", "cli.main", "proxy", "--upstream", urls, "--enforcement", "full",
                              "--policy", args.policy, "--state-url", state_url],
                             logs / f"proxy-{i}.log", env={"GUARD_API_KEYS": USER, "GUARD_ADMIN_KEYS": ADMIN})
               for i in range(args.proxies)]
    for proxy in tqdm(proxies, desc="proxies (guard proxy)", unit="server"):
        proxy.wait_ready(600)
    return upstreams, proxies


def upstream_metric(upstream: ServerProcess, name: str) -> int:
    """A vLLM metric of the upstream's /metrics, summed over its labels."""
    text = httpx.get(f"{upstream.url}/metrics", timeout=10).text
    return round(sum(float(v) for v in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)", text, re.M)))


def finished_requests(upstream: ServerProcess) -> int:
    """The upstream's own count of finished requests (every finish reason)."""
    return upstream_metric(upstream, "vllm:request_success_total")


class _Load:
    """The closed loop's clients and its two events, sharing what they record."""

    def __init__(self, args, proxies: list[ServerProcess], upstreams: list[ServerProcess]):
        self.args, self.proxies, self.upstreams = args, proxies, upstreams
        self.sent: list[dict] = []  # one per request: proxy, status, started, ended
        self.in_flight = 0
        self.turn = iter(range(10**9))
        self.deadline = time.monotonic() + args.seconds
        self.user = {"authorization": f"Bearer {USER}"}
        self.admin = {"authorization": f"Bearer {ADMIN}"}
        self.model = httpx.get(f"{proxies[0].url}/v1/models", headers=self.user, timeout=30).json()["data"][0]["id"]
        self.events: dict = {}

    async def client(self, http: httpx.AsyncClient, number: int) -> None:
        k = number
        while time.monotonic() < self.deadline:
            index = next(self.turn) % len(self.proxies)
            body = {"model": self.model, "messages": [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}],
                    "max_tokens": self.args.max_tokens, "temperature": 0}
            k += 1
            started = time.monotonic()
            self.in_flight += 1
            try:
                response = await http.post(f"{self.proxies[index].url}/v1/chat/completions", json=body,
                                           headers=self.user)
                status = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.in_flight -= 1
            self.sent.append({"proxy": index, "status": status, "started": started, "ended": time.monotonic()})

    async def ask_each(self, http: httpx.AsyncClient) -> tuple[list[str], list[bool | None]]:
        """Each proxy's answer to the target's question, and whether it names the target (None: an error)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": NEW_TARGET_QUESTION}], "max_tokens": 32,
                "temperature": 0}
        replies = await asyncio.gather(*(http.post(f"{proxy.url}/v1/chat/completions", json=body, headers=self.user)
                                         for proxy in self.proxies))
        answers = [r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else f"status {r.status_code}"
                   for r in replies]
        named = [None if r.status_code != 200 else NEW_TARGET["id"] in a.lower() for r, a in zip(replies, answers)]
        return answers, named

    async def post_target(self, http: httpx.AsyncClient) -> None:
        await asyncio.sleep(self.args.seconds / 8)
        answers_before, named_before = await self.ask_each(http)
        posted_at = time.monotonic()
        posted = await http.post(f"{self.proxies[0].url}/v1/forget", json=NEW_TARGET, headers=self.admin)
        version = posted.json()["version"]
        delays = {}
        while len(delays) < len(self.proxies):
            for i, proxy in enumerate(self.proxies):
                if i not in delays:
                    listed = (await http.get(f"{proxy.url}/v1/forget", headers=self.admin)).json()
                    if listed["enforced_version"] >= version:
                        delays[i] = time.monotonic() - posted_at
            await asyncio.sleep(0.02)
        answers, named = await self.ask_each(http)
        self.events["target"] = {"status": posted.status_code, "version": version,
                                 "enforced_after_s": [round(delays[i], 3) for i in range(len(self.proxies))],
                                 "answers_before": answers_before, "named_before": named_before,
                                 "answers": answers, "named": named}

    async def kill_upstream(self) -> None:
        """At half-time, once the victim is generating (within 10 s): killed with requests on it."""
        await asyncio.sleep(self.args.seconds / 2)
        victim = self.upstreams[-1]
        for _ in range(50):
            if (running := await asyncio.to_thread(upstream_metric, victim, "vllm:num_requests_running")) > 0:
                break
            await asyncio.sleep(0.2)
        counts = [await asyncio.to_thread(finished_requests, u) for u in self.upstreams]
        waiting = await asyncio.to_thread(upstream_metric, victim, "vllm:num_requests_waiting")
        self.events["kill"] = {"at": time.monotonic(), "in_flight": self.in_flight, "upstream_counts": counts,
                               "running_on_victim": running + waiting}
        await asyncio.to_thread(victim.kill)


async def run_load(args, proxies, upstreams) -> dict:
    """The closed loop, with the target posted at an eighth of the run and an upstream killed at half."""
    load = _Load(args, proxies, upstreams)
    limits = httpx.Limits(max_connections=args.clients + 8)
    before = {i: finished_requests(u) for i, u in enumerate(upstreams)}
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(load.client(http, n) for n in range(args.clients)), load.post_target(http),
                             load.kill_upstream())
    after = {i: finished_requests(u) for i, u in enumerate(upstreams[:-1])}
    sent, events = load.sent, load.events
    killed_at = events["kill"]["at"]
    window = [r for r in sent if r["started"] <= killed_at + 1.0 and r["ended"] >= killed_at]
    later = [r for r in sent if r["started"] > killed_at + 1.0]
    return {
        "requests": len(sent), "seconds": round(time.monotonic() - started, 1),
        "per_proxy": dict(sorted(Counter(r["proxy"] for r in sent).items())),
        "statuses": dict(Counter(str(r["status"]) for r in sent)),
        "upstream_requests_before_kill": {i: events["kill"]["upstream_counts"][i] - before[i]
                                          for i in range(len(upstreams))},
        "upstream_requests_after_kill": {i: after[i] - events["kill"]["upstream_counts"][i] for i in after},
        "target": events["target"],
        "kill": {"in_flight_at_kill": events["kill"]["in_flight"], "running_on_victim": events["kill"]["running_on_victim"],
                 "around_kill": dict(Counter(str(r["status"]) for r in window)),
                 "after_kill": dict(Counter(str(r["status"]) for r in later)),
                 "errors_before_kill": sum(r["status"] != 200 for r in sent if r["ended"] < killed_at)},
    }


def start_postgres(folder: Path):
    import pgserver  # the test extra: PostgreSQL's own binaries, from PyPI

    return pgserver.get_server(folder, cleanup_mode="stop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--upstreams", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--policy", default="examples/harry-potter.yaml")
    parser.add_argument("--state-url", default=None, help="a PostgreSQL database to use (default: one started here)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    if args.upstreams < 2:
        parser.error("--upstreams: at least 2 (one is killed mid-run)")
    logs = args.out / "fleet-logs"  # every server's log, kept
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guard-fleet-") as tmp:
        postgres = None if args.state_url else start_postgres(Path(tmp) / "postgres")
        state_url = args.state_url or postgres.get_uri()
        servers: list[ServerProcess] = []
        try:
            upstreams, proxies = start_fleet(args, logs, state_url)
            servers = [*proxies, *upstreams]
            result = asyncio.run(run_load(args, proxies, upstreams))
        finally:
            stop_all(servers)
            if postgres is not None:
                postgres.cleanup()
    result.update(proxies=args.proxies, upstreams=args.upstreams, clients=args.clients, max_tokens=args.max_tokens,
                  machine=platform.platform(), processor=platform.processor() or platform.machine())
    (args.out / "fleet.json").write_text(json.dumps(result, indent=2))
    print(report(result))


def report(result: dict) -> str:
    target, kill = result["target"], result["kill"]
    rows = [
        ("requests (statuses)", f"{result['requests']} in {result['seconds']} s ({result['statuses']})"),
        ("per proxy", ", ".join(f"{n}" for n in result["per_proxy"].values())),
        ("per upstream before the kill (its own count, rewinds included)",
         ", ".join(f"{n}" for n in result["upstream_requests_before_kill"].values())),
        ("per surviving upstream after it", ", ".join(f"{n}" for n in result["upstream_requests_after_kill"].values())),
        ("target posted to proxy 0: enforced by each after (s)", ", ".join(f"{s:.2f}" for s in target["enforced_after_s"])),
        ("the answer to its question on each proxy names it: before, after",
         "; ".join(", ".join({True: "yes", False: "no", None: "error"}[n] for n in target[key])
                   for key in ("named_before", "named"))),
        ("upstream killed: requests in flight then (all; on it, running or waiting, by its own count)",
         f"{kill['in_flight_at_kill']}; {kill['running_on_victim']}"),
        ("requests around the kill (statuses)", str(kill["around_kill"])),
        ("requests after it (statuses)", str(kill["after_kill"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    main()
