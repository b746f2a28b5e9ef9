"""What the guard costs a suite (`guard bench`'s phase 5), on the engine that gave its answers:
guarded vs plain throughput on the same batch, the added time to the first token, the classifier's
latency; and each method's unguarded served tokens/s."""

from __future__ import annotations

import statistics
import time

from tqdm import tqdm

from benchmarks.answering import BASE, GUARD
from benchmarks.detection import first_token_ms
from benchmarks.throughput import engine_run, paired_ratio, server_run
from guard.chat import render_chat
from guard.conversation import Conversation
from guard.restriction import UNRESTRICTED

TTFT_RUNS = 15


def _batch(suite, questions: list[str]) -> list[str]:
    """`questions` repeated to the suite's throughput batch."""
    return (questions * (suite.throughput_batch // len(questions) + 1))[:suite.throughput_batch]


async def plain_tokens_per_s(suite, view, questions: list[str]) -> float:
    """Unguarded served tokens/s of `view` on the suite's batch: the median of its runs."""
    prompts = [render_chat(view.tokenizer, [{"role": "user", "content": q}]) for q in _batch(suite, questions)]
    runs = [(await server_run(view, prompts, suite.throughput_tokens, [UNRESTRICTED] * len(prompts), 0,
                              suite.throughput_seconds))[0] for _ in range(suite.throughput_runs)]
    return statistics.median(runs)


async def _samples(suite, engine, restrictions, prompts, per_prompt, flagged: str, progress: bool) -> dict:
    """Plain and guarded: decode (every row decodes exactly `throughput_tokens`, the guard's per-step
    cost), server (the whole guarded path, hold-back, detector and rewinds, in a closed loop, natural
    stops) and time to first token (one request at a time on an idle engine)."""
    specs = [r.spec for r in per_prompt]
    tokens, seconds = suite.throughput_tokens, suite.throughput_seconds
    await engine_run(engine, prompts, 4, specs)  # warm-up
    samples = {key: [] for key in ("decode_plain", "decode_guarded", "server_plain", "server_guarded",
                                   "ttft_plain", "ttft_guarded")}
    for _ in tqdm(range(suite.throughput_runs), desc="cost (plain vs guarded)", unit="run", disable=not progress):
        samples["decode_plain"].append(await engine_run(engine, prompts, tokens, None))
        samples["decode_guarded"].append(await engine_run(engine, prompts, tokens, specs))
        samples["server_plain"].append((await server_run(engine, prompts, tokens, [UNRESTRICTED] * len(prompts), 0,
                                                         seconds))[0])
        samples["server_guarded"].append((await server_run(engine, prompts, tokens, per_prompt, 6, seconds))[0])
    for _ in range(TTFT_RUNS):
        samples["ttft_plain"].append(await first_token_ms(engine, restrictions, flagged, False))
        samples["ttft_guarded"].append(await first_token_ms(engine, restrictions, flagged, True))
    return samples


def _classifier_ms(restrictions, questions: list[str]) -> list[float]:
    timings = []
    for q in questions * 3:
        started = time.perf_counter()
        restrictions.detect(Conversation.of_prompt(q))
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def measure_cost(suite, engine, views, restrictions, questions, progress) -> tuple[dict, dict]:
    """(the guard's overhead, each view's served tokens/s): guarded vs plain on the same engine and
    batch, each prompt restricted as the classifier decides."""
    batch = _batch(suite, questions)
    prompts = [render_chat(engine.tokenizer, [{"role": "user", "content": q}]) for q in batch]
    per_prompt = [restrictions.for_conversation(Conversation.of_prompt(q)) for q in batch]  # as the server decides, once
    flagged = next((q for q, r in zip(batch, per_prompt) if r.target_ids), batch[0])
    samples = await _samples(suite, engine, restrictions, prompts, per_prompt, flagged, progress)
    classifier_ms = _classifier_ms(restrictions, questions)
    median = statistics.median
    tokens_per_s = {BASE: median(samples["server_plain"]), GUARD: median(samples["server_guarded"])}
    for name, (view, _) in views.items():
        if name not in tokens_per_s:
            tokens_per_s[name] = await plain_tokens_per_s(suite, view, questions)
    overhead = {
        "throughput_ratio": paired_ratio(samples["decode_guarded"], samples["decode_plain"]),
        "plain_tokens_per_s": median(samples["decode_plain"]),
        "guarded_tokens_per_s": median(samples["decode_guarded"]),
        "server_throughput_ratio": paired_ratio(samples["server_guarded"], samples["server_plain"]),
        "server_plain_tokens_per_s": median(samples["server_plain"]),
        "server_guarded_tokens_per_s": median(samples["server_guarded"]),
        "ttft_ms_added": median(g - p for g, p in zip(samples["ttft_guarded"], samples["ttft_plain"])),
        "classifier_ms_p50": median(classifier_ms),
        "flagged_rows": sum(bool(r.target_ids) for r in per_prompt), "batch": len(batch),
        "max_tokens": suite.throughput_tokens, "runs": suite.throughput_runs, "window_s": suite.throughput_seconds,
        "samples": {k: v for k, v in samples.items() if not k.startswith("ttft")},
    }
    return overhead, tokens_per_s
