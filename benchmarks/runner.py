"""`guard bench`: every method on the same data, model and prompts; forget quality, utility and cost.

The phases, in order:
1. models   the "target" model (the base fine-tuned on every subject) and the "retain reference"
            (fine-tuned on the retain subjects only), cached by the hash of their recipe;
2. variants each weight-level method run by `guard unlearn`'s own trainer on the target, cached the
            same way; the wall-clock time to make each is its cost;
3. answers  greedy answers to every forget and retain question through one vLLM engine serving the
            target and every variant (LoRA): `base` unguarded, `guard` through the server's real
            guarded path (classifier, spans, logits processor, rewinds), each variant unguarded;
4. scoring  teacher-forced likelihoods of the reference, paraphrased and perturbed answers under each
            method (GUARD's under the guarded distribution) and under the retain reference;
5. cost     guarded vs unguarded throughput on the same engine and batch, added time to first
            token, classifier latency;
then results.json, report.md and plots. The phases every suite shares live in modules of their own:
the variants in benchmarks.variants, the answers in benchmarks.answering, the cost in benchmarks.cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from benchmarks.answering import BASE, GUARD, greedy_answers, guard_restrictions, served
from benchmarks.cost import measure_cost, plain_tokens_per_s
from benchmarks.finetune import TINY, Recipe, finetuned
from benchmarks.items import QA, BenchData, evenly_spaced, write_jsonl
from benchmarks.metrics import score_method, truth_ratios
from benchmarks.provenance import environment
from benchmarks.report import write_report
from benchmarks.variants import WeightMethod, make_variants, merged_variant, split_variants
from guard.conversation import Conversation
from guard.matcher import Matcher
from guard.vocab import TokenIndex
from runtime.models import guard_home, is_default_model, model_provenance, resolve_model
from server.engines.embedded import LoraView


@dataclass(frozen=True)
class Suite:
    """A TOFU-style suite: what `run` compares, on which data and model, and how long it measures."""
    name: str
    data: Callable[[], BenchData]
    base: str  # TINY or DEFAULT_MODEL
    weight_methods: tuple[WeightMethod, ...]
    finetune_epochs: int = 0  # 0: no fine-tuning, the base model is the target
    finetune_lr: float = 0.0
    retain_eval: int | None = None  # retain items answered and scored (evenly spaced); None: all
    max_tokens: int = 48  # greedy answer length
    throughput_batch: int = 16
    throughput_tokens: int = 64
    throughput_runs: int = 3
    throughput_seconds: float = 10.0
    merged_throughput: bool = False  # also serve each LoRA variant merged into the weights, for its tokens/s

    def run(self, out: Path, progress: bool = True) -> dict:
        return run(self, out, progress)


def _pairs(items) -> tuple[tuple[str, str], ...]:
    return tuple((q.question, q.answer) for q in items)


# -- 1. models (2. variants: benchmarks.variants) ---------------------------------------------------
def prepare_models(suite: Suite, data: BenchData, tokenizer_path: str, cache: Path) -> tuple[Path, Path | None, dict]:
    """(target, retain reference or None, seconds spent making each)."""
    if not suite.finetune_epochs:
        return Path(tokenizer_path), None, {}
    base = TINY if suite.base == TINY else tokenizer_path
    recipe = dict(epochs=suite.finetune_epochs, lr=suite.finetune_lr)
    target, target_s = finetuned(Recipe(base, _pairs(data.train), **recipe), tokenizer_path, cache, "target")
    reference, reference_s = finetuned(Recipe(base, _pairs(data.retain), **recipe), tokenizer_path, cache,
                                       "retain-reference")
    return target, reference, {"target": target_s, "retain_reference": reference_s}


# -- 3. answers (5. cost: benchmarks.cost) ----------------------------------------------------
async def serve_and_measure(suite: Suite, target: Path, variants: dict[str, Path], restrictions,
                            questions: list[str], mixed: list[str], cache: Path,
                            progress: bool) -> tuple[dict[str, list[str]], dict, dict, dict]:
    """Greedy answers to `questions` per method; the guard's overhead and each method's served
    tokens/s on `mixed` (forget and retain questions alternating, as in traffic that only partly
    touches a target); with `suite.merged_throughput`, each LoRA variant merged into the weights too:
    its tokens/s, and the share of its greedy answers the same as the adapter's (bf16 rounding of
    the merged weights can change a few)."""
    lora, full = split_variants(variants)
    with tqdm(total=2 + len(variants), desc="answers (greedy, vLLM)", unit="method", disable=not progress) as bar:
        async with served(target, lora) as engine:
            views = {BASE: (engine, False), GUARD: (engine, True), **{v.name: (LoraView(engine, v.name), False)
                                                                     for v in lora}}
            answers = {}
            for name, (view, guarded) in views.items():
                answers[name] = await greedy_answers(view, restrictions, questions, guarded, suite.max_tokens)
                bar.update()
            overhead, tokens_per_s = await measure_cost(suite, engine, views, restrictions, mixed, progress)
        for variant in full:  # an engine each, one after the other
            async with served(variant.path) as engine:
                answers[variant.name] = await greedy_answers(engine, restrictions, questions, False, suite.max_tokens)
                tokens_per_s[variant.name] = await plain_tokens_per_s(suite, engine, mixed)
            bar.update()
    merged = {}  # name -> (tokens/s, share of answers the same as the unmerged adapter's)
    for variant in lora if suite.merged_throughput else ():
        async with served(merged_variant(target, variant.path, cache)) as engine:
            same = [a == b for a, b in zip(await greedy_answers(engine, restrictions, questions, False, suite.max_tokens),
                                           answers[variant.name])]
            merged[variant.name] = (await plain_tokens_per_s(suite, engine, mixed), statistics.mean(same))
    return answers, overhead, tokens_per_s, merged


# -- 4. scoring ------------------------------------------------------------------------------------
def likelihoods(model, tokenizer, items: list[QA], matchers=None) -> list[tuple[float, float, list[float]]]:
    """Per item: mean token NLL of (answer, paraphrased answer, each perturbed answer)."""
    from benchmarks.scoring import answer_nlls  # torch: only when scoring

    scored = []
    for i, item in enumerate(items):
        nlls = answer_nlls(model, tokenizer, item.question,
                           [item.answer, item.paraphrased_answer, *item.perturbed_answers],
                           matchers[i] if matchers else None)
        scored.append((nlls[0], nlls[1], nlls[2:]))
    return scored


def guard_matchers(restrictions, items: list[QA], tokenizer):
    """The matcher the guard would run for each item's question (None where nothing is restricted)."""
    index = TokenIndex.from_tokenizer(tokenizer)
    compiled = {}
    matchers = []
    for item in items:
        spec = restrictions.for_conversation(Conversation.of_prompt(item.question)).spec
        if spec is not None and spec.compile_key not in compiled:
            compiled[spec.compile_key] = Matcher.for_spec(spec, index)
        matchers.append(compiled[spec.compile_key] if spec is not None else None)
    return matchers


def score_all(forget: list[QA], retain: list[QA], target: Path, reference: Path | None, variants: dict[str, Path],
              restrictions, answers: dict[str, list[str]], progress: bool) -> dict[str, dict]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with torch.no_grad():  # for this scoring only: the grad mode is the caller's again after it
        tokenizer = AutoTokenizer.from_pretrained(target)

        def load(path):
            return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()

        reference_ratios = truth_ratios(likelihoods(load(reference), tokenizer, forget)) if reference else None
        scores = {}
        target_model = load(target)
        matchers = guard_matchers(restrictions, forget + retain, tokenizer)
        for name in tqdm(answers, desc="scoring (teacher-forced)", unit="method", disable=not progress):
            if name in (BASE, GUARD):
                model = target_model
            elif (variants[name] / "adapter_config.json").exists():
                model = PeftModel.from_pretrained(load(target), variants[name]).eval()
            else:  # a full checkpoint (SSD, SalUn, a merged adapter)
                model = load(variants[name])
            guarded = name == GUARD
            forget_nll = likelihoods(model, tokenizer, forget, matchers[:len(forget)] if guarded else None)
            retain_nll = likelihoods(model, tokenizer, retain, matchers[len(forget):] if guarded else None)
            n = len(forget)
            scores[name] = dataclasses.asdict(score_method(answers[name][:n], answers[name][n:], forget, retain,
                                                           forget_nll, retain_nll, reference_ratios))
        return scores


# -- the whole run ---------------------------------------------------------------------------------
def run(suite: Suite, out: Path, progress: bool = True) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cache = guard_home() / "bench-cache"
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer_path = resolve_model(None)
    data = suite.data()
    target, reference, model_seconds = prepare_models(suite, data, tokenizer_path, cache)

    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    forget_file = write_jsonl(data_dir / "forget.jsonl", _pairs(data.forget))
    retain_file = write_jsonl(data_dir / "retain.jsonl", _pairs(data.retain))
    variants, costs = make_variants(suite.weight_methods, target, forget_file, retain_file, cache, progress)
    restrictions, costs[GUARD] = guard_restrictions(data.policy(), target)

    forget, retain = list(data.forget), evenly_spaced(data.retain, suite.retain_eval)
    questions = [q.question for q in forget + retain]
    mixed = [q.question for pair in zip_longest(forget, retain) for q in pair if q is not None]
    answers, overhead, tokens_per_s, merged = asyncio.run(
        serve_and_measure(suite, target, variants, restrictions, questions, mixed, cache, progress))
    methods = score_all(forget, retain, target, reference, variants, restrictions, answers, progress)
    for name, row in methods.items():
        row["tokens_per_s"] = tokens_per_s.get(name)
        if name in merged:
            row["tokens_per_s_merged"], row["merged_same_answers"] = merged[name]
    flagged = [bool(restrictions.detect(Conversation.of_prompt(q))) for q in questions]
    methods[GUARD]["forget_unflagged"] = 1 - statistics.mean(flagged[:len(forget)])
    methods[GUARD]["retain_flagged"] = statistics.mean(flagged[len(forget):])

    _write_answers(out / "answers.jsonl", questions, len(forget), answers)
    results = {
        "suite": suite.name,
        "model": {"base": model_provenance(tokenizer_path) if is_default_model(suite.base)
                  else "a tiny random Llama (2 layers, hidden 128) on the bundled model's tokenizer",
                  "target": str(target)},
        "methods": methods, "guard_overhead": overhead, "costs": costs,
        "provenance": {
            "data": data.name, "forget_items": len(forget), "retain_items": len(data.retain),
            "retain_items_evaluated": len(retain),
            "base": suite.base, "target": str(target), "retain_reference": str(reference) if reference else None,
            "model_seconds": model_seconds, "seeds": {"data": 0, "training": 0},
            **environment(), "seconds": round(time.perf_counter() - started, 1),
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, out)
    return results


def _write_answers(path: Path, questions: list[str], forget_count: int, answers: dict[str, list[str]]) -> None:
    with path.open("w") as f:
        for i, question in enumerate(questions):
            split = "forget" if i < forget_count else "retain"
            f.write(json.dumps({"split": split, "question": question,
                                **{name: replies[i] for name, replies in answers.items()}}) + "\n")
