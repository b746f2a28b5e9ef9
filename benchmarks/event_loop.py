"""Does one heavy request slow the others down? A small request's latency on `guard serve`, alone and
while huge-but-allowed requests are being read.

    python -m benchmarks.event_loop [--runs 60] [--huge-mb 6] [--out bench-results]

Starts `guard serve` (the bundled model, the example Harry Potter policy, eager) and times a small
chat request ("hi", 4 tokens) `--runs` times alone, then `--runs` times while a second client keeps
sending a prompt of `--huge-mb` MB (under the 8 MiB body limit, far over the context: tokenised,
classified, then refused with a 400). The tokenising, the classifier and the policy store run off the
event loop (server.serving.decisions, server.serving.generate.routes); were they on it, every small request would wait for a
huge one to be tokenised (seconds). Medians, and the ratio of the two, in `event_loop.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from harness.processes import ServerProcess
from runtime.models import DEFAULT_MODEL, model_provenance, resolve_model

POLICY = "examples/harry-potter.yaml"


def _chat(url: str, text: str, max_tokens: int) -> httpx.Response:
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)


def small_latencies(url: str, runs: int, label: str) -> list[float]:
    """Seconds per small request, one after the other."""
    seconds = []
    for _ in tqdm(range(runs), desc=label, unit="request"):
        started = time.perf_counter()
        response = _chat(url, "hi", 4)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return seconds


def while_huge(url: str, runs: int, megabytes: float) -> tuple[list[float], list[float]]:
    """Small-request latencies while huge requests are sent back to back (the last one is waited for);
    and the seconds each huge one took to be refused."""
    stop, huge, unexpected = threading.Event(), [], []
    text = "word " * int(megabytes * 1_000_000 / 5)

    def keep_sending() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            response = _chat(url, text, 1)
            if response.status_code != 400:
                unexpected.append(f"a huge prompt was answered {response.status_code}: {response.text[:200]}")
                return
            huge.append(time.perf_counter() - started)
    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        latencies = small_latencies(url, runs, f"small, beside {megabytes:g} MB prompts")
    finally:
        stop.set()
        sender.join()
    if unexpected:
        raise RuntimeError(unexpected[0])
    return latencies, huge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--huge-mb", type=float, default=6.0)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    model_dir = resolve_model(None)
    log = Path(tempfile.mkdtemp(prefix="event-loop-")) / "serve.log"
    serve = [sys.executable, "-m", "cli.main", "serve", "--policy", POLICY, "--enforce-eager"]
    with ServerProcess(serve, log) as server:
        small_latencies(server.url, 3, "warm-up")
        alone = small_latencies(server.url, args.runs, "small, alone")
        beside, huge = while_huge(server.url, args.runs, args.huge_mb)
    results = {"runs": args.runs, "huge_mb": args.huge_mb, "huge_requests_refused": len(huge),
               "median_ms_huge": round(1000 * statistics.median(huge), 1) if huge else None,
               "median_ms_alone": round(1000 * statistics.median(alone), 1),
               "median_ms_beside_huge": round(1000 * statistics.median(beside), 1),
               "ratio": round(statistics.median(beside) / statistics.median(alone), 2),
               "model": model_provenance(model_dir)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "event_loop.json").write_text(json.dumps(results, indent=2))
    print(f"a small request: {results['median_ms_alone']} ms alone, {results['median_ms_beside_huge']} ms beside "
          f"huge ones (x{results['ratio']}), each refused in {results['median_ms_huge']} ms; "
          f"written to {out / 'event_loop.json'}")


if __name__ == "__main__":
    main()
