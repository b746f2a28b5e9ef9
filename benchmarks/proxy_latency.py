"""What `guard proxy` adds to latency: time to first token and time per token, direct vs through it.

    python -m benchmarks.proxy_latency [--runs 9] [--tokens 64] [--out bench-results]

Starts a plain `vllm serve` of the bundled model and a `guard proxy` (bias level, the example Harry
Potter policy) in front of it, then a `vllm serve` with the guard's logits processor and a full-level
proxy. For each, streamed greedy requests of exactly `--tokens` tokens (ignore_eos), one at a time,
alternating direct and proxied, `--runs` of each:
- unrelated: a question about no forget target (the proxy classifies it; the safety net guards the answer);
- guarded:   a question about the target (bias: logit_bias + output filter; full: the guard in the
             upstream's engine, rewinds in the proxy). Direct, the upstream answers unguarded.
Medians per case; writes `proxy_latency.json` into `--out` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from harness.processes import ServerProcess
from runtime.models import DEFAULT_MODEL, model_provenance, resolve_model

MODEL = DEFAULT_MODEL  # the name the servers give it
POLICY = "examples/harry-potter.yaml"
PROCESSOR = "vllm_guard.processor:GuardLogitsProcessor"
CASES = {"unrelated": "Tell me about the history of Paris.", "guarded": "Tell me about the Harry Potter books."}


def timed_stream(url: str, question: str, tokens: int) -> tuple[float, float, int]:
    """(ms to the first content chunk, ms per token after it, tokens) of one streamed answer. The
    proxy's hold-back releases whole words, so tokens are counted from the usage, not the chunks; an
    answer the filter cuts has no usage, and counts its chunks (so its ms/token is an upper bound)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    produced = chunks = 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                produced = event["usage"]["completion_tokens"]
            if ((event.get("choices") or [{}])[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                chunks += 1
    produced = produced or chunks
    if first is None or produced < 2:
        raise RuntimeError(f"no streamed answer from {url} for {question!r}")
    return (first - started) * 1000, (last - first) * 1000 / (produced - 1), produced


def compare(direct: str, proxy: str, runs: int, tokens: int, label: str) -> dict:
    results = {}
    for case, question in CASES.items():
        samples = {"direct": [], "proxy": []}
        for url in (direct, proxy):  # warm-up
            timed_stream(url, question, tokens)
        for _ in tqdm(range(runs), desc=f"{label}: {case}", unit="run"):
            samples["direct"].append(timed_stream(direct, question, tokens))
            samples["proxy"].append(timed_stream(proxy, question, tokens))
        median = {side: [statistics.median(s[i] for s in runs_) for i in range(3)] for side, runs_ in samples.items()}
        results[case] = {
            "ttft_ms_direct": round(median["direct"][0], 1), "ttft_ms_proxy": round(median["proxy"][0], 1),
            "ttft_ms_added": round(statistics.median(p[0] - d[0] for p, d in zip(samples["proxy"], samples["direct"])), 1),
            "ms_per_token_direct": round(median["direct"][1], 2), "ms_per_token_proxy": round(median["proxy"][1], 2),
            "tokens_direct": median["direct"][2], "tokens_proxy": median["proxy"][2],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    model_dir = resolve_model(None)
    vllm = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,  # = `vllm serve`
            "--max-model-len", "2048", "--served-model-name", MODEL]  # vLLM's default: compiled
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_USE_AOT_COMPILE": "0"}  # cached
    proxy = [sys.executable, "-m", "cli.main", "proxy", "--policy", POLICY, "--tokenizer", model_dir, "--upstream"]
    logs = Path(tempfile.mkdtemp(prefix="proxy-latency-"))
    levels = {}
    for level, extra in (("bias", []), ("full", ["--logits-processors", PROCESSOR])):
        with ServerProcess(vllm + extra, logs / f"vllm-{level}.log", env) as upstream, \
                ServerProcess(proxy + [f"{upstream.url}/v1"], logs / f"proxy-{level}.log") as proxied:
            found = httpx.get(f"{proxied.url}/health", timeout=10).json()["enforcement"]
            if found != level:
                raise RuntimeError(f"expected the {level} level, the proxy chose {found}")
            levels[level] = compare(upstream.url, proxied.url, args.runs, args.tokens, level)
    results = {"levels": levels, "runs": args.runs, "tokens": args.tokens, "model": model_provenance(model_dir),
               "machine": platform.platform(), "processor": platform.processor() or platform.machine()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "proxy_latency.json").write_text(json.dumps(results, indent=2))
    print(f"{'level':7} {'case':10} {'TTFT direct':>12} {'TTFT proxy':>11} {'added':>8} {'ms/token direct':>16} "
          f"{'ms/token proxy':>15}")
    for level, cases in levels.items():
        for case, r in cases.items():
            print(f"{level:7} {case:10} {r['ttft_ms_direct']:>10.1f}ms {r['ttft_ms_proxy']:>9.1f}ms "
                  f"{r['ttft_ms_added']:>6.1f}ms {r['ms_per_token_direct']:>14.2f}ms {r['ms_per_token_proxy']:>13.2f}ms")
    print(f"written to {out / 'proxy_latency.json'}")


if __name__ == "__main__":
    main()
