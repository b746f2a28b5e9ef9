"""The guard's per-step tensor op at serving scale: batch and vocabulary of a large model, timed.

    python -m benchmarks.step_op [--batches 16 256] [--vocabularies 49152 131072] [--repeats 50] [--out bench-results]

Each step the logits processor gathers every guarded row's sparse bias (token ids and values, from
its matcher state's cache) into one (rows, cols, values) triple and writes it into the logits with
one indexed add (vllm_guard.logits_ops). Its cost grows with the entries, not with the vocabulary; the
dense alternative (a [batch, vocabulary] bias added to the logits) grows with both. Both are timed
here on the same device, for rows as `guard serve` restricts them: the safety net (a dozen blocked
tokens a row) and a flagged conversation (a few hundred blocked or penalised tokens a row). Medians
of `--repeats` runs; on CUDA, synchronised.

Then the whole per-step work of the real logits processor (vllm_guard.processor: each row's matcher
state advanced by its new token, its cached bias looked up, the write), driven as vLLM drives it, on
the bundled model's tokenizer with the example policy: half the rows flagged, half under the safety
net, every row writing a real answer about the target token by token. Writes step_op.json into --out
and prints both tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from types import SimpleNamespace

import torch
from tqdm import tqdm

from guard.name_words import leading_words
from vllm_guard.logits_ops import apply_sparse_bias, gather_row_biases
from guard.policy import load_policy
from guard.spec import GuardSpec, compile_patterns

ENTRIES = {"safety net": 12, "flagged": 400}


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of `fn()` over `repeats` runs, after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(batch: int, vocabulary: int, entries: int, device: torch.device, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocabulary, device=device)
    biases = []
    for _ in range(batch):  # each row's cached (cols, values) pair, as the processor keeps them
        cols = torch.randperm(vocabulary, generator=generator)[:entries].to(device)
        values = torch.where(torch.rand(entries, generator=generator) < 0.5, float("-inf"), -4.0).to(device)
        biases.append((cols, values))
    rows = list(range(batch))

    def sparse():
        r, c, v = gather_row_biases(rows, biases, device)
        apply_sparse_bias(logits, r, c, v)

    def dense():
        bias = torch.zeros(batch, vocabulary, device=device)
        for row, (cols, values) in enumerate(biases):
            bias[row, cols] = values
        logits.add_(bias)

    return {"batch": batch, "vocabulary": vocabulary, "entries_per_row": entries,
            "sparse_ms": _timed(sparse, device, repeats), "dense_ms": _timed(dense, device, repeats)}


ANSWER = ("The Harry Potter books were written by J.K. Rowling. Harry's best friends are Ron Weasley and "
          "Hermione Granger, and they study at Hogwarts, where the dark wizard Voldemort is their enemy. ")


def measure_processor(batch: int, policy_path: str, steps: int) -> dict:
    """Milliseconds per step of the real processor's update_state + apply (median over `steps`)."""
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from vllm_guard.processor import GuardLogitsProcessor
    from runtime.models import resolve_model
    from transformers import AutoTokenizer

    model = str(resolve_model(None))
    tokenizer = AutoTokenizer.from_pretrained(model)
    config = SimpleNamespace(model_config=SimpleNamespace(tokenizer=model, tokenizer_revision=None,
                                                          get_vocab_size=lambda: len(tokenizer)))
    processor = GuardLogitsProcessor(config, torch.device("cpu"), False)
    phrases = [p for t in load_policy(policy_path).targets for p in t.phrases]
    patterns = compile_patterns(phrases)
    flagged = GuardSpec(patterns, 8.0, patterns, tuple(sorted(leading_words(phrases))))
    net = GuardSpec(patterns, 0.0, ())
    answer = tokenizer.encode(ANSWER * 8, add_special_tokens=False)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    added = [(i, SamplingParams(extra_args=(flagged if i % 2 else net).to_extra_args()), [1, 2, 3], outputs[i])
             for i in range(batch)]
    processor.update_state(BatchUpdate(batch_size=batch, removed=[], moved=[], added=added))
    logits = torch.zeros(batch, len(tokenizer))
    samples = []
    for step in range(steps):
        for i, output in enumerate(outputs):  # each row one token further into the answer (offset per row)
            output.append(answer[(step + 7 * i) % len(answer)])
        started = time.perf_counter()
        processor.update_state(None)
        processor.apply(logits)
        samples.append((time.perf_counter() - started) * 1000)
    return {"batch": batch, "vocabulary": len(tokenizer), "steps": steps, "ms_per_step": statistics.median(samples),
            "ms_per_step_p90": sorted(samples)[int(0.9 * len(samples))]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--vocabularies", type=int, nargs="+", default=[49152, 131072])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--policy", default="examples/harry-potter.yaml")
    parser.add_argument("--steps", type=int, default=200, help="decode steps of the processor measurement")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cases = [(b, v, kind) for b in args.batches for v in args.vocabularies for kind in ENTRIES]
    results = []
    for batch, vocabulary, kind in tqdm(cases, desc="shapes", unit="shape"):
        results.append({"rows": kind, **measure(batch, vocabulary, ENTRIES[kind], device, args.repeats)})
    processor = [measure_processor(batch, args.policy, args.steps) for batch in tqdm(args.batches, desc="processor",
                                                                                  unit="batch")]
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats, "results": results,
           "processor": processor}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_op.json").write_text(json.dumps(out, indent=2))
    print(f"{'batch':>6} {'vocabulary':>10} {'rows':>11} {'sparse ms':>10} {'dense ms':>9}")
    for r in results:
        print(f"{r['batch']:>6} {r['vocabulary']:>10} {r['rows']:>11} {r['sparse_ms']:>10.3f} {r['dense_ms']:>9.3f}")
    print("the processor, per decode step (half the rows flagged), on the CPU:")
    for r in processor:
        print(f"  batch {r['batch']:>4}: {r['ms_per_step']:.3f} ms median, {r['ms_per_step_p90']:.3f} ms p90")


if __name__ == "__main__":
    main()
