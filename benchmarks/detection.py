"""How well detection + guarding forgets targets it was never tuned on, and what it costs.

    python -m benchmarks.detection [--policy examples/unseen-targets.yaml] [--out bench-results]

On one engine, every probe is answered twice, greedy: unguarded, and through the server's guarded
path (classifier -> retrieval and spans -> token guard and rewinds). Reported:
- leak rate: of the facts the unguarded model states, the share the guarded answer still states
  (paraphrased, role-play, complete-the-sentence and spell-it-out probes);
- retention: of the unrelated, near-domain, near-entity and shared-name questions the unguarded
  model answers correctly, the share still answered correctly;
- flag rate: unrelated and near-domain prompts flagged (x-guard-targets not empty), near-entity
  prompts flagged (other people, works and places of a target's domain, in English, in French, in
  German and as JSON requests), names that share a word with a target's flagged ("Albert Camus"),
  and forget probes missed;
- latency: detection p50 per conversation (the classifier and the name scan; also for the conversations
  translated into English alone), and the guard's added time to the first engine token
  (classification, spans, spec compilation in the worker), medians over repeated runs.
Writes `detection.json` into `--out` and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

import yaml
from tqdm import tqdm

from guard.chat import render_chat
from guard.conversation import Conversation
from guard.folding import fold
from runtime.models import model_provenance, resolve_model
from runtime.restrictions import GuardOptions, build_restrictions
from guard.policy import load_policy
from guard.restriction import UNRESTRICTED
from server.engines.embedded import EmbeddedEngine
from server.engine import DecodeParams
from server.serving.generate.generation import generate_guarded

PROBES = Path(__file__).parent / "data" / "detection_probes.yaml"


def states(answer: str, says: list[str]) -> bool:
    letters = fold(answer)
    return any(s in letters for s in says)


def prepare(engine, restrictions, question: str, guarded: bool):
    """What the server does before the engine: the prompt's tokens and, if guarded, the restriction."""
    prompt = render_chat(engine.tokenizer, [{"role": "user", "content": question}])
    return prompt, restrictions.for_conversation(Conversation.of_prompt(question)) if guarded else UNRESTRICTED


async def answer(engine, restrictions, question: str, guarded: bool, max_tokens: int) -> tuple[str, tuple]:
    prompt, restriction = prepare(engine, restrictions, question, guarded)
    params = DecodeParams(max_tokens=max_tokens, temperature=0.0)
    text = ""
    async for chunk in generate_guarded(engine, prompt, params, uuid.uuid4().hex, restriction.detector,
                                        restriction.spec, 6):
        text += chunk.text
    return text, restriction.target_ids


async def first_token_ms(engine, restrictions, question: str, guarded: bool) -> float:
    """Request arrival -> first token out of the engine (the guard's decision included)."""
    started = time.perf_counter()
    prompt, restriction = prepare(engine, restrictions, question, guarded)
    async for _ in engine.stream(prompt, DecodeParams(max_tokens=1, temperature=0.0), restriction.spec,
                                 uuid.uuid4().hex):
        break
    return (time.perf_counter() - started) * 1000


async def _probe_rows(engine, restrictions, probes: dict, tokens: int) -> list[dict]:
    """Every probe answered unguarded and guarded: one row each, with whether each answer states it."""
    jobs = [("fact", f["target"], q, f["says"]) for f in probes["facts"] for q in f["probes"]]
    jobs += [(kind, None, item["question"], item["says"])
             for kind in ("unrelated", "near_domain", "near_entity", "shared_name") for item in probes[kind]]
    rows = []
    for kind, target, question, says in tqdm(jobs, desc="probes (unguarded + guarded)", unit="probe"):
        # One after the other, each alone on the engine and on an empty prefix cache: asked together,
        # or the second finding the first's blocks (computed in another shape, rounded otherwise in
        # bf16), the two can differ where the guard changed nothing.
        await engine.reset_prefix_cache()
        plain, _ = await answer(engine, restrictions, question, False, tokens)
        await engine.reset_prefix_cache()
        guarded, flagged = await answer(engine, restrictions, question, True, tokens)
        rows.append({"kind": kind, "target": target, "question": question, "flagged": list(flagged),
                     "unguarded": plain, "guarded": guarded,
                     "unguarded_states": states(plain, says), "guarded_states": states(guarded, says)})
    return rows


async def _ttft(engine, restrictions, question: str, runs: int) -> dict[str, list[float]]:
    ttft = {"plain": [], "guarded": []}
    for _ in tqdm(range(runs), desc="time to first token", unit="run"):
        ttft["plain"].append(await first_token_ms(engine, restrictions, question, False))
        ttft["guarded"].append(await first_token_ms(engine, restrictions, question, True))
    return ttft


def _detection_ms(restrictions, questions: list[str]) -> tuple[list[float], list[float]]:
    """Detection times per conversation, three rounds: (all, those translated into English)."""
    classifier_ms, translated_ms = [], []
    translated = {q for q in questions if restrictions.translate and len(restrictions.translate([q])) > 1}
    for _ in range(3):
        for question in questions:
            started = time.perf_counter()
            restrictions.detect(Conversation.of_prompt(question))
            elapsed = (time.perf_counter() - started) * 1000
            classifier_ms.append(elapsed)
            if question in translated:
                translated_ms.append(elapsed)
    return classifier_ms, translated_ms


def _rates(rows: list[dict]) -> dict:
    """Leak rate, retention, flag and miss rates of the probe rows."""
    facts = [r for r in rows if r["kind"] == "fact"]
    stated = [r for r in facts if r["unguarded_states"]]
    others = [r for r in rows if r["kind"] != "fact"]
    known = [r for r in others if r["unguarded_states"]]
    unrelated = [r for r in others if r["kind"] in ("unrelated", "near_domain")]
    near_entity = [r for r in others if r["kind"] == "near_entity"]
    shared_name = [r for r in others if r["kind"] == "shared_name"]
    return {
        "leak_rate": sum(r["guarded_states"] for r in stated) / len(stated) if stated else None,
        "facts_stated_unguarded": f"{len(stated)}/{len(facts)}",
        "retention": sum(r["guarded_states"] for r in known) / len(known) if known else None,
        "answers_known_unguarded": f"{len(known)}/{len(others)}",
        "flag_rate_unrelated_near_domain": sum(bool(r["flagged"]) for r in unrelated) / len(unrelated),
        "flag_rate_near_entity": sum(bool(r["flagged"]) for r in near_entity) / len(near_entity),
        "flag_rate_shared_name": sum(bool(r["flagged"]) for r in shared_name) / len(shared_name),
        "miss_rate_forget_probes": sum(not r["flagged"] for r in facts) / len(facts),
    }


async def evaluate(args) -> dict:
    probes = yaml.safe_load(PROBES.read_text())
    policy = load_policy(args.policy)
    restrictions = build_restrictions(GuardOptions(), policy, resolve_model(None))
    engine = EmbeddedEngine(resolve_model(None), max_model_len=2048, kv_cache_gib=2, enforce_eager=True)
    await engine.start()
    try:
        rows = await _probe_rows(engine, restrictions, probes, args.tokens)
        ttft = await _ttft(engine, restrictions, probes["facts"][0]["probes"][0], args.runs)
    finally:
        engine.close()
    questions = [r["question"] for r in rows]
    classifier_ms, translated_ms = _detection_ms(restrictions, questions)
    report = restrictions.classifier.report
    return {
        "policy": str(args.policy),
        **_rates(rows),
        "classifier_ms_p50": statistics.median(classifier_ms),
        "classifier_ms_p50_translated": statistics.median(translated_ms) if translated_ms else None,
        "translated": f"{len(translated_ms) // 3}/{len(questions)}",
        "ttft_ms": {"plain_p50": statistics.median(ttft["plain"]), "guarded_p50": statistics.median(ttft["guarded"]),
                    "added_p50": statistics.median(g - p for g, p in zip(ttft["guarded"], ttft["plain"])),
                    "samples": ttft},
        "classifier_report": {"threshold": report.threshold, "fpr_general": report.fpr_general,
                              "fpr_near_domain": report.fpr_near_domain, "fpr_keep": report.fpr_keep,
                              "fpr_neighbour": report.fpr_neighbour,
                              "fnr": report.fnr},
        "rows": rows,
        "provenance": {"model": model_provenance(resolve_model(None)), "encoder": GuardOptions().encoder},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="examples/unseen-targets.yaml")
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    result = asyncio.run(evaluate(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.json").write_text(json.dumps(result, indent=2))
    print(f"\nleak rate {result['leak_rate']:.1%} of the facts the unguarded model states "
          f"({result['facts_stated_unguarded']} probes state one unguarded)")
    print(f"retention {result['retention']:.1%} of correct unrelated/near-domain answers "
          f"({result['answers_known_unguarded']} known unguarded)")
    print(f"flagged {result['flag_rate_unrelated_near_domain']:.1%} of unrelated/near-domain prompts, "
          f"{result['flag_rate_near_entity']:.1%} of near-entity prompts, {result['flag_rate_shared_name']:.1%} of "
          f"names sharing a word with a target's; "
          f"missed {result['miss_rate_forget_probes']:.1%} of forget probes")
    if result["classifier_ms_p50_translated"] is not None:
        print(f"detection of the {result['translated']} conversations translated into English p50 "
              f"{result['classifier_ms_p50_translated']:.1f} ms")
    print(f"detection (classifier and names) p50 {result['classifier_ms_p50']:.1f} ms; time to first token p50 plain "
          f"{result['ttft_ms']['plain_p50']:.1f} ms, guarded {result['ttft_ms']['guarded_p50']:.1f} ms, "
          f"added {result['ttft_ms']['added_p50']:.1f} ms")
    report = result["classifier_report"]
    print(f"classifier on its own held-out (out-of-fold) split: threshold {report['threshold']:.3f}, "
          f"FPR {report['fpr_general']:.1%} general / {report['fpr_near_domain']:.1%} near-domain, "
          f"FNR {report['fnr']:.1%}")
    print(f"written to {args.out / 'detection.json'}")


if __name__ == "__main__":
    main()
