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
then results.json, report.md and plots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import platform
import statistics
import time
from contextlib import asynccontextmanager
from itertools import zip_longest
from pathlib import Path

from tqdm import tqdm

from benchmarks.detection import answer, first_token_ms
from benchmarks.finetune import TINY, Recipe, finetuned
from benchmarks.items import QA, BenchData, evenly_spaced, write_jsonl
from benchmarks.suites import Suite, WeightMethod
from benchmarks.throughput import engine_run, paired_ratio, server_run
from guard.conversation import Conversation
from guard.files import cache_key, file_sha256, write_folder_atomically

GUARD, BASE = "guard", "base"
TTFT_RUNS = 15


def _pairs(items) -> tuple[tuple[str, str], ...]:
    return tuple((q.question, q.answer) for q in items)


# -- 1. models, 2. variants ------------------------------------------------------------------------
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


def make_variant(method: WeightMethod, target: Path, forget: Path, retain: Path, cache: Path,
                 progress: bool) -> tuple[Path, dict]:
    """The variant `method` makes from `target` (a LoRA adapter, or a full checkpoint for the methods
    that change the weights themselves), and what it cost to make, from its model card: {seconds
    (measured when it was made), kind ("training (LoRA)", "training (full)" or "no training")}."""
    from unlearning.config import UnlearnConfig
    from unlearning.methods import METHODS
    from unlearning.trainer import unlearn

    key = cache_key(target.name, method.method, method.settings, file_sha256(forget), file_sha256(retain))
    out = cache / f"variant-{method.name}-{key}"
    card = out / "unlearn-card.json"
    if not card.exists():
        uses_retain = "retain" in METHODS[method.method].roles
        config = UnlearnConfig(method=method.method, forget=str(forget), out=str(out), model=str(target),
                               retain=str(retain) if uses_retain else None, overwrite=True, **method.settings)
        unlearn(config, progress=progress)
    made = json.loads(card.read_text())
    if not made["results"]["steps"]:
        kind = "no training (one pass over the data)"
    else:
        kind = f"training ({'LoRA' if made['kind'] in ('lora', 'merged') else 'full'})"
    return out, {"seconds": made["results"]["seconds"], "kind": kind}


def make_variants(methods: tuple[WeightMethod, ...], target: Path, forget: Path, retain: Path, cache: Path,
                  progress: bool) -> tuple[dict[str, Path], dict[str, dict]]:
    """Every method's variant (make_variant) and what each cost to make."""
    variants, costs = {}, {}
    for method in methods:
        variants[method.name], costs[method.name] = make_variant(method, target, forget, retain, cache, progress)
    return variants, costs


def guard_restrictions(policy, target: Path):
    """The guard's restrictions for `policy` on `target`'s tokenizer, and what they cost to make."""
    from runtime.restrictions import GuardOptions, build_restrictions

    started = time.perf_counter()
    restrictions = build_restrictions(GuardOptions(), policy, str(target))
    return restrictions, {"seconds": round(time.perf_counter() - started, 1),
                          "kind": "classifier training + span index (cached classifiers load in seconds)"}


def merged_variant(target: Path, adapter: Path, cache: Path) -> Path:
    """`adapter` merged into `target`'s weights: the checkpoint `guard unlearn --merge` writes."""
    out = cache / f"merged-{cache_key(target.name, adapter.name)}"
    if not (out / "config.json").exists():
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from unlearning.trainer import write_checkpoint

        def save(staging: Path) -> None:
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
            merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            write_checkpoint(merged, AutoTokenizer.from_pretrained(target), staging)
        write_folder_atomically(out, save)
    return out


# -- 3. answers, 5. cost ---------------------------------------------------------------------------
@asynccontextmanager
async def served(model: Path, loras=()):
    """A vLLM engine on `model` (eager, 1 GiB of KV cache) with `loras` (inspected LoRA variants)."""
    from transformers import AutoConfig

    from server.embedded_engine import EmbeddedEngine
    from server.variants import engine_lora_rank

    positions = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", 2048)
    engine = EmbeddedEngine(str(model), max_model_len=min(2048, positions), kv_cache_gib=1, enforce_eager=True,
                            loras={v.name: str(v.path) for v in loras}, max_lora_rank=engine_lora_rank(list(loras)))
    await engine.start()
    try:
        yield engine
    finally:
        engine.close()


async def greedy_answers(view, restrictions, questions: list[str], guarded: bool, max_tokens: int) -> list[str]:
    replies = await asyncio.gather(*(answer(view, restrictions, q, guarded, max_tokens) for q in questions))
    return [text for text, _ in replies]


def split_variants(variants: dict[str, Path]) -> tuple[list, list]:
    """(LoRA variants, full variants), inspected: the first are served by the target's engine, the
    others by an engine each."""
    from server.variants import inspect_variant

    inspected = [inspect_variant(name, path) for name, path in variants.items()]
    return [v for v in inspected if v.kind == "lora"], [v for v in inspected if v.kind == "full"]


async def serve_and_measure(suite: Suite, target: Path, variants: dict[str, Path], restrictions,
                            questions: list[str], mixed: list[str], cache: Path,
                            progress: bool) -> tuple[dict[str, list[str]], dict, dict, dict]:
    """Greedy answers to `questions` per method; the guard's overhead and each method's served
    tokens/s on `mixed` (forget and retain questions alternating, as in traffic that only partly
    touches a target); with `suite.merged_throughput`, each LoRA variant merged into the weights too:
    its tokens/s, and the share of its greedy answers the same as the adapter's (bf16 rounding of
    the merged weights can change a few)."""
    from server.embedded_engine import LoraView

    lora, full = split_variants(variants)
    with tqdm(total=2 + len(variants), desc="answers (greedy, vLLM)", unit="method", disable=not progress) as bar:
        async with served(target, lora) as engine:
            views = {BASE: (engine, False), GUARD: (engine, True), **{v.name: (LoraView(engine, v.name), False)
                                                                     for v in lora}}
            answers = {}
            for name, (view, guarded) in views.items():
                answers[name] = await greedy_answers(view, restrictions, questions, guarded, suite.max_tokens)
                bar.update()
            overhead, tokens_per_s = await _measure_cost(suite, engine, views, restrictions, mixed, progress)
        for variant in full:  # an engine each, one after the other
            async with served(variant.path) as engine:
                answers[variant.name] = await greedy_answers(engine, restrictions, questions, False, suite.max_tokens)
                tokens_per_s[variant.name] = await _plain_tokens_per_s(suite, engine, mixed)
            bar.update()
    merged = {}  # name -> (tokens/s, share of answers the same as the unmerged adapter's)
    for variant in lora if suite.merged_throughput else ():
        async with served(merged_variant(target, variant.path, cache)) as engine:
            same = [a == b for a, b in zip(await greedy_answers(engine, restrictions, questions, False, suite.max_tokens),
                                           answers[variant.name])]
            merged[variant.name] = (await _plain_tokens_per_s(suite, engine, mixed), statistics.mean(same))
    return answers, overhead, tokens_per_s, merged


async def _plain_tokens_per_s(suite: Suite, view, questions: list[str]) -> float:
    """Unguarded served tokens/s of `view` on the suite's batch: the median of its runs."""
    from guard.chat import render_chat
    from guard.restriction import UNRESTRICTED

    batch = (questions * (suite.throughput_batch // len(questions) + 1))[:suite.throughput_batch]
    prompts = [render_chat(view.tokenizer, [{"role": "user", "content": q}]) for q in batch]
    runs = [(await server_run(view, prompts, suite.throughput_tokens, [UNRESTRICTED] * len(prompts), 0,
                              suite.throughput_seconds))[0] for _ in range(suite.throughput_runs)]
    return statistics.median(runs)


async def _measure_cost(suite, engine, views, restrictions, questions, progress) -> tuple[dict, dict]:
    """Guarded vs plain on the same engine and batch, each prompt restricted as the classifier decides:
    - decode: every row decodes exactly `throughput_tokens` (the per-step cost of the guard);
    - server: the whole guarded path (hold-back, detector, rewinds) in a closed loop, natural stops."""
    from guard.chat import render_chat
    from guard.restriction import UNRESTRICTED

    batch = (questions * (suite.throughput_batch // len(questions) + 1))[:suite.throughput_batch]
    prompts = [render_chat(engine.tokenizer, [{"role": "user", "content": q}]) for q in batch]
    per_prompt = [restrictions.for_conversation(Conversation.of_prompt(q)) for q in batch]  # as the server decides, once
    specs = [r.spec for r in per_prompt]
    flagged = next((q for q, r in zip(batch, per_prompt) if r.target_ids), batch[0])
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
    for _ in range(TTFT_RUNS):  # one request at a time on an idle engine
        samples["ttft_plain"].append(await first_token_ms(engine, restrictions, flagged, False))
        samples["ttft_guarded"].append(await first_token_ms(engine, restrictions, flagged, True))
    classifier_ms = []
    for q in questions * 3:
        started = time.perf_counter()
        restrictions.detect(Conversation.of_prompt(q))
        classifier_ms.append((time.perf_counter() - started) * 1000)
    median = statistics.median
    tokens_per_s = {BASE: median(samples["server_plain"]), GUARD: median(samples["server_guarded"])}
    for name, (view, _) in views.items():
        if name not in tokens_per_s:
            tokens_per_s[name] = await _plain_tokens_per_s(suite, view, questions)
    overhead = {
        "throughput_ratio": paired_ratio(samples["decode_guarded"], samples["decode_plain"]),
        "plain_tokens_per_s": median(samples["decode_plain"]),
        "guarded_tokens_per_s": median(samples["decode_guarded"]),
        "server_throughput_ratio": paired_ratio(samples["server_guarded"], samples["server_plain"]),
        "server_plain_tokens_per_s": median(samples["server_plain"]),
        "server_guarded_tokens_per_s": median(samples["server_guarded"]),
        "ttft_ms_added": median(g - p for g, p in zip(samples["ttft_guarded"], samples["ttft_plain"])),
        "classifier_ms_p50": median(classifier_ms),
        "flagged_rows": sum(bool(r.target_ids) for r in per_prompt), "batch": len(batch), "max_tokens": tokens,
        "runs": suite.throughput_runs, "window_s": seconds,
        "samples": {k: v for k, v in samples.items() if not k.startswith("ttft")},
    }
    return overhead, tokens_per_s


# -- 4. scoring ------------------------------------------------------------------------------------
def likelihoods(model, tokenizer, items: list[QA], matchers=None) -> list[tuple[float, float, list[float]]]:
    """Per item: mean token NLL of (answer, paraphrased answer, each perturbed answer)."""
    from benchmarks.scoring import answer_nlls

    scored = []
    for i, item in enumerate(items):
        nlls = answer_nlls(model, tokenizer, item.question,
                           [item.answer, item.paraphrased_answer, *item.perturbed_answers],
                           matchers[i] if matchers else None)
        scored.append((nlls[0], nlls[1], nlls[2:]))
    return scored


def guard_matchers(restrictions, items: list[QA], tokenizer):
    """The matcher the guard would run for each item's question (None where nothing is restricted)."""
    from guard.matcher import Matcher
    from guard.vocab import TokenIndex

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

    from benchmarks.metrics import score_method, truth_ratios

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
    from benchmarks.report import write_report
    from runtime.models import guard_home, is_default_model, model_provenance, resolve_model

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


def environment() -> dict:
    import torch
    import transformers
    import vllm

    return {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "vllm": vllm.__version__},
            "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}
