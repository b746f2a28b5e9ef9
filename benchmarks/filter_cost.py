"""What the output filter costs on one endless word, and whether the proxy stays responsive meanwhile.

    python -m benchmarks.filter_cost [--runs 3] [--out bench-results]

Starts the standard-library fake upstream (harness/fake_upstream.py) and two `guard proxy
--enforcement filter` processes in front of it: one with the example Harry Potter policy, asked a
question about the target (the strict filter: the worst case), and one with an empty policy
(nothing to enforce: the relay alone). Each streams answers of one unbroken word of 1k to 64k
characters in 4-character events, `--runs` times, while a second client polls `/health`. Reports
the median time per answer and the slowest `/health` seen during them; writes `filter_cost.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from harness.processes import ServerProcess

LENGTHS = (1000, 4000, 16000, 64000)
QUESTION = "Who wrote the Harry Potter books?"


def streamed(url: str, length: int) -> tuple[float, int]:
    """(seconds, characters received) for one answer of a `length`-character word."""
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": f"{QUESTION} #long-{length}"}]}
    started, received = time.perf_counter(), 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                received += len((choices[0].get("delta") or {}).get("content") or "")
    return time.perf_counter() - started, received


def measure(url: str, length: int, runs: int) -> dict:
    """The median seconds of `runs` answers, and the slowest and median /health polled meanwhile."""
    health: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=600) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get(f"{url}/health")
                health.append(time.perf_counter() - started)
                time.sleep(0.05)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        samples = [streamed(url, length) for _ in range(runs)]
    finally:
        done.set()
        poller.join()
    if any(received != length for _, received in samples):
        raise RuntimeError(f"an answer of {length} characters came back short: {samples}")
    return {"seconds": round(statistics.median(s for s, _ in samples), 3), "health_max_s": round(max(health), 3),
            "health_p50_s": round(statistics.median(health), 4), "health_polls": len(health)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="filter-cost-"))
    empty = logs / "empty.yaml"
    empty.write_text("targets: []\n")
    proxy = [sys.executable, "-m", "cli.main", "proxy", "--enforcement", "filter", "--upstream"]
    results: dict[str, dict] = {}
    with ServerProcess([sys.executable, "-m", "harness.fake_upstream"], logs / "upstream.log") as upstream:
        for case, policy in (("filtered", "examples/harry-potter.yaml"), ("relayed", str(empty))):
            with ServerProcess(proxy + [f"{upstream.url}/v1", "--policy", policy], logs / f"{case}.log") as proxied:
                streamed(proxied.url, 100)  # warm-up
                results[case] = {str(n): measure(proxied.url, n, args.runs)
                                 for n in tqdm(LENGTHS, desc=case, unit="length")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "filter_cost.json").write_text(json.dumps(
        {"cases": results, "runs": args.runs, "machine": platform.platform(),
         "processor": platform.processor() or platform.machine()}, indent=2))
    print(f"{'characters':>10} {'filtered s':>11} {'/health max':>12} {'relayed s':>10} {'/health max':>12}")
    for n in LENGTHS:
        f, r = results["filtered"][str(n)], results["relayed"][str(n)]
        print(f"{n:>10} {f['seconds']:>11.2f} {f['health_max_s']:>11.2f}s {r['seconds']:>10.2f} {r['health_max_s']:>11.2f}s")
    print(f"written to {out / 'filter_cost.json'}")


if __name__ == "__main__":
    main()
