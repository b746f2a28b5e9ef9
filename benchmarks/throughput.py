"""Guarded vs unguarded decode throughput on the same engine, prompts and batch.

    python -m benchmarks.throughput [--batch 16] [--tokens 128] [--runs 5] [--out bench-results]

Every row is restricted as `guard serve` restricts it: the prompt classifier (trained on the policy)
flags the questions about a target, which get the full restriction; every other row carries the
safety net (every target's explicit phrases, blocked, no penalty). Three measurements over `--runs`
alternating runs; each ratio is the median of per-run ratios against the plain run beside it:
- engine, safety net: every row decodes exactly `--tokens` tokens (ignore_eos) carrying the safety
           net's spec: the per-step cost of the logits processor on every answer;
- engine, as served:  the same, each row with its own restriction (the flagged ones in full);
- server:  the whole guarded generation loop (state machine, hold-back, rewinds) against plain
           generation, greedy with natural stops, in a closed loop (one client per row sending
           requests back to back for `--seconds`); tokens/s over the tokens of the final answers.
The engine runs vLLM's default (compiled) mode, as `guard serve` does (`--enforce-eager` to compare).
Writes `throughput.json` into `--out` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from guard.chat import render_chat
from guard.conversation import Conversation
from runtime.models import model_provenance, resolve_model
from runtime.restrictions import GuardOptions, build_restrictions
from guard.policy import load_policy
from guard.restriction import UNRESTRICTED
from server.engines.embedded import EmbeddedEngine
from server.engine import DecodeParams
from server.serving.generate.generation import generate_guarded

QUESTIONS = [
    "Who wrote the Harry Potter books?", "Who are Harry Potter's best friends?",
    "Who is Harry Potter's greatest enemy?", "Describe the school Harry Potter attends.",
    "Tell me about the Harry Potter films.", "Who is the headmaster in Harry Potter?",
    "What is Quidditch?", "Summarise the first Harry Potter book.",
    "What is the capital of France?", "Who founded Microsoft?", "Explain photosynthesis briefly.",
    "Write a short poem about the sea.", "What is the capital of Japan?", "How do vaccines work?",
    "Give me three tips for learning to cook.", "Who founded Apple?",
]


async def engine_run(engine, prompts, tokens, spec) -> float:
    """Decode tokens/s of the batch, every row exactly `tokens` long; `spec`: one GuardSpec (or None)
    for every row, or a list with one per prompt."""
    params = DecodeParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    specs = spec if isinstance(spec, list) else [spec] * len(prompts)

    async def one(prompt, row_spec):
        count = 0
        async for delta in engine.stream(prompt, params, row_spec, uuid.uuid4().hex):
            count += len(delta.token_ids)
        return count

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(p, s) for p, s in zip(prompts, specs)))
    return sum(counts) / (time.perf_counter() - started)


async def server_run(engine, prompts, tokens, restrictions, max_rewinds, seconds) -> tuple[float, float, int]:
    """Closed loop: one client per prompt (each with its restriction), each sending requests back to
    back for `seconds`, so the batch stays full as in steady serving. Counts the requests completed
    within the window."""
    params = DecodeParams(max_tokens=tokens, temperature=0.0)
    deadline = time.perf_counter() + seconds
    answer = decoded = rewinds = 0

    async def client(prompt, restriction):
        nonlocal answer, decoded, rewinds
        while time.perf_counter() < deadline:
            last = None
            async for chunk in generate_guarded(engine, prompt, params, uuid.uuid4().hex, restriction.detector,
                                                restriction.spec, max_rewinds):
                last = chunk
            if time.perf_counter() <= deadline:
                answer, decoded, rewinds = answer + last.completion_tokens, decoded + last.decoded_tokens, \
                    rewinds + last.rewinds

    started = time.perf_counter()
    clients = [asyncio.create_task(client(p, r)) for p, r in zip(prompts, restrictions)]
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    for task in clients:
        task.cancel()  # requests still running at the deadline are aborted and not counted
    await asyncio.gather(*clients, return_exceptions=True)
    elapsed = min(time.perf_counter(), deadline) - started
    return answer / elapsed, decoded / elapsed, rewinds


async def measure(args) -> dict:
    model_path = resolve_model(args.model)
    restrictions = build_restrictions(GuardOptions(), load_policy(args.policy), model_path)
    questions = (QUESTIONS * (args.batch // len(QUESTIONS) + 1))[: args.batch]
    served = [restrictions.for_conversation(Conversation.of_prompt(q)) for q in questions]  # as the server decides, once
    net = restrictions.safety_net.spec
    engine = EmbeddedEngine(model_path, max_model_len=2048, kv_cache_gib=args.kv_cache_gib,
                            enforce_eager=args.enforce_eager)
    await engine.start()
    try:
        prompts = [render_chat(engine.tokenizer, [{"role": "user", "content": q}]) for q in questions]
        for spec in (None, net, [r.spec for r in served]):  # warm-up: caches, first-call costs
            await engine_run(engine, prompts, 8, spec)
        runs: dict[str, list[float]] = {k: [] for k in ("plain", "net", "served", "server_plain", "server_guarded",
                                                         "decoded", "rewinds")}
        for _ in tqdm(range(args.runs), desc="runs (engine: plain, net, as served; server: plain, guarded)",
                      unit="run"):
            runs["plain"].append(await engine_run(engine, prompts, args.tokens, None))
            runs["net"].append(await engine_run(engine, prompts, args.tokens, net))
            runs["served"].append(await engine_run(engine, prompts, args.tokens, [r.spec for r in served]))
            runs["server_plain"].append((await server_run(engine, prompts, args.tokens, [UNRESTRICTED] * len(prompts),
                                                          0, args.seconds))[0])
            answer_tps, decoded_tps, n_rewinds = await server_run(engine, prompts, args.tokens, served, 6, args.seconds)
            runs["server_guarded"].append(answer_tps)
            runs["decoded"].append(decoded_tps)
            runs["rewinds"].append(n_rewinds)
    finally:
        engine.close()
    med = statistics.median
    return {
        "batch": args.batch, "max_tokens": args.tokens, "runs": args.runs, "policy": str(args.policy),
        "compiled": not args.enforce_eager, "flagged_rows": sum(bool(r.target_ids) for r in served),
        "safety_net_patterns": len(net.patterns) if net else 0,
        "engine": {"plain_tokens_per_s": med(runs["plain"]),
                   "safety_net": {"tokens_per_s": med(runs["net"]),
                                  "throughput_ratio": paired_ratio(runs["net"], runs["plain"])},
                   "as_served": {"tokens_per_s": med(runs["served"]),
                                 "throughput_ratio": paired_ratio(runs["served"], runs["plain"])},
                   "samples": {k: runs[k] for k in ("plain", "net", "served")}},
        "server": {"plain_tokens_per_s": med(runs["server_plain"]), "guarded_tokens_per_s": med(runs["server_guarded"]),
                   "throughput_ratio": paired_ratio(runs["server_guarded"], runs["server_plain"]),
                   "guarded_decoded_tokens_per_s": med(runs["decoded"]),  # rewound tokens included
                   "rewinds_per_run": med(runs["rewinds"]), "window_s": args.seconds,
                   "samples": {"plain": runs["server_plain"], "guarded": runs["server_guarded"]}},
        "provenance": {"model": model_provenance(model_path), "machine": platform.platform(),
                       "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }


def paired_ratio(guarded: list[float], plain: list[float]) -> float:
    """Median of per-run ratios: each guarded run against the plain run just before it, so slow
    drifts of a shared machine cancel out."""
    return statistics.median(g / p for g, p in zip(guarded, plain))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--policy", default="examples/harry-potter.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0, help="window of each closed-loop server run")
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--enforce-eager", action="store_true", help="run the model eagerly (vLLM's default: compiled)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=2))
    print(f"\nbatch {result['batch']} ({result['flagged_rows']} rows flagged), {result['max_tokens']} tokens per row, "
          f"median of {result['runs']} runs")
    print(f"{'':22} {'plain tok/s':>12} {'guarded tok/s':>14} {'ratio':>7}")
    engine, server = result["engine"], result["server"]
    for label, r in (("engine, safety net", engine["safety_net"]), ("engine, as served", engine["as_served"])):
        print(f"{label:22} {engine['plain_tokens_per_s']:12.1f} {r['tokens_per_s']:14.1f} {r['throughput_ratio']:7.3f}")
    print(f"{'server':22} {server['plain_tokens_per_s']:12.1f} {server['guarded_tokens_per_s']:14.1f} "
          f"{server['throughput_ratio']:7.3f}")
    server = result["server"]
    print(f"guarded server: {server['guarded_decoded_tokens_per_s']:.1f} tok/s decoded, rewound tokens included; "
          f"{server['rewinds_per_run']} rewinds per {server['window_s']:.0f} s window (median)")
    print(f"written to {args.out / 'throughput.json'}")


if __name__ == "__main__":
    main()
