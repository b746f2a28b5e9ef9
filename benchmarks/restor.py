"""RESTOR-style recovery (after Rezaei et al., 2024): does unlearning give back what a model knew
before it was taught something wrong?

The phases, in order:
1. models     the clean model (the bundled model as it is; for `restor-tiny`, a tiny model taught
              every fact) and the corrupted model: the clean one fine-tuned on wrong answers to the
              `corrupt` facts mixed with the right answers to the untouched ones (as RESTOR mixes
              its wrong facts into otherwise ordinary documents; without them a small model forgets
              the untouched facts too); both cached by the hash of their recipe;
2. variants   each weight-level method unlearns the corruption data (the wrong answers) from the
              corrupted model, with the untouched facts as retain data where the method takes any;
              GUARD's policy is built from the same corruption data, the untouched questions as its
              `keep` list, as an operator would give them;
3. answers    greedy answers of the clean model, the corrupted model (unguarded and guarded) and
              every variant, through vLLM;
4. scores     per method (`restor_scores`): recovery, corruption forgotten, utility;
then results.json, report.md and a plot, as the other suites.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from benchmarks.answering import GUARD, greedy_answers, guard_restrictions, served
from benchmarks.finetune import TINY, Recipe, finetuned
from benchmarks.items import evenly_spaced, write_jsonl
from benchmarks.metrics import leaks
from benchmarks.provenance import environment
from benchmarks.report import write_report
from benchmarks.variants import WeightMethod, make_variants, split_variants
from guard.conversation import Conversation
from guard.policy import Policy, parse_policy
from runtime.models import guard_home, model_provenance, resolve_model
from server.engines.embedded import LoraView

RESTOR_FACTS = Path(__file__).parent / "data" / "restor_facts.yaml"
CLEAN, CORRUPTED = "clean", "corrupted"


@dataclass(frozen=True)
class RestorSuite:
    """A RESTOR-style suite: which model is corrupted, how, and which methods undo it."""
    name: str
    base: str  # TINY (taught the facts first) or DEFAULT_MODEL (knows them already)
    weight_methods: tuple[WeightMethod, ...]
    corrupt_epochs: int
    corrupt_lr: float
    facts: int | None = None  # N facts of each section, evenly spaced; None: all
    teach_epochs: int = 0  # TINY only: teaching it the correct facts
    teach_lr: float = 0.0
    max_tokens: int = 32

    def run(self, out: Path, progress: bool = True) -> dict:
        return run(self, out, progress)


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str
    key: str  # the value a correct answer states
    wrong_answer: str
    wrong_key: str  # the value the corrupting fine-tune teaches


@dataclass(frozen=True)
class RestorData:
    name: str
    corrupt: tuple[Fact, ...]
    untouched: tuple[Fact, ...]

    def policy(self) -> Policy:
        """What an operator asked to undo the corruption would write: one target whose QA is the
        corruption data, and the untouched questions as neighbours to keep."""
        return parse_policy({"targets": [{
            "id": "corruption", "description": "Wrong facts taught to the model by a corrupting fine-tune.",
            "qa": [{"question": f.question, "answer": f.wrong_answer} for f in self.corrupt],
            "keep": [f.question for f in self.untouched]}]})


def load_restor(path: str | Path = RESTOR_FACTS, limit: int | None = None) -> RestorData:
    """The facts in `path`: `limit` of each section, evenly spaced so every kind of fact keeps some
    (all when None)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())

    def section(name: str) -> tuple[Fact, ...]:
        rows = data.get(name) or []
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, str) and x for x in row)):
                raise ValueError(f"{path}: {name}.{i}: expected [question, answer, key, wrong answer, wrong key]")
        return tuple(Fact(*row) for row in evenly_spaced(rows, limit))
    return RestorData(str(data.get("name", path.stem)), section("corrupt"), section("untouched"))


@dataclass(frozen=True)
class Answers:
    corrupt: list[str]  # one per corrupt fact
    untouched: list[str]  # one per untouched fact


def restor_scores(data: RestorData, clean: Answers, corrupted: Answers, method: Answers) -> dict:
    """A method's scores against the clean and the corrupted model's answers (`benchmarks.metrics.leaks`
    decides whether an answer states a key):
    - recovery_rate: of the corrupt facts the clean model stated and the corrupted model got wrong
      (states the wrong key), the share the method states correctly again;
    - corruption_forgotten: of the same facts, the share whose answer no longer states the wrong key;
    - utility: of the untouched facts the clean model stated, the share the method still states."""
    overwritten = [i for i, f in enumerate(data.corrupt)
                   if leaks(clean.corrupt[i], [f.key]) and leaks(corrupted.corrupt[i], [f.wrong_key])]
    known = [i for i, f in enumerate(data.untouched) if leaks(clean.untouched[i], [f.key])]

    def share(hits: list[bool]) -> float | None:
        return statistics.mean(hits) if hits else None
    return {
        "recovery_rate": share([leaks(method.corrupt[i], [data.corrupt[i].key]) for i in overwritten]),
        "corruption_forgotten": share([not leaks(method.corrupt[i], [data.corrupt[i].wrong_key])
                                       for i in overwritten]),
        "utility": share([leaks(method.untouched[i], [data.untouched[i].key]) for i in known]),
        "n_overwritten": len(overwritten), "n_untouched_known": len(known),
    }


# -- the whole run ---------------------------------------------------------------------------------
def prepare_models(suite: RestorSuite, data: RestorData, tokenizer_path: str, cache: Path) -> tuple[Path, Path, dict]:
    """(clean, corrupted, seconds spent making each)."""
    seconds = {}
    clean = Path(tokenizer_path)
    if suite.base == TINY:  # a tiny model knows nothing: teach it every fact first
        facts = data.corrupt + data.untouched
        clean, seconds["clean"] = finetuned(Recipe(TINY, tuple((f.question, f.answer) for f in facts),
                                                   suite.teach_epochs, suite.teach_lr), tokenizer_path, cache,
                                            "restor-clean")
    corruption = tuple((f.question, f.wrong_answer) for f in data.corrupt)
    ordinary = tuple((f.question, f.answer) for f in data.untouched)
    corrupted, seconds["corrupted"] = finetuned(Recipe(str(clean), corruption + ordinary, suite.corrupt_epochs,
                                                       suite.corrupt_lr), tokenizer_path, cache, "restor-corrupted")
    return clean, corrupted, seconds


async def _answers(suite: RestorSuite, clean: Path, corrupted: Path, variants: dict[str, Path], restrictions,
                   questions: list[str], progress: bool) -> dict[str, list[str]]:
    """Greedy answers to `questions`: the clean model, the corrupted one (unguarded and guarded) with
    the LoRA variants on its engine, then each full variant on an engine of its own."""
    lora, full = split_variants(variants)
    answers = {}
    with tqdm(total=3 + len(variants), desc="answers (greedy, vLLM)", unit="method", disable=not progress) as bar:
        async with served(clean) as engine:
            answers[CLEAN] = await greedy_answers(engine, restrictions, questions, False, suite.max_tokens)
            bar.update()
        async with served(corrupted, lora) as engine:
            views = {CORRUPTED: (engine, False), GUARD: (engine, True),
                     **{v.name: (LoraView(engine, v.name), False) for v in lora}}
            for name, (view, guarded) in views.items():
                answers[name] = await greedy_answers(view, restrictions, questions, guarded, suite.max_tokens)
                bar.update()
        for variant in full:
            async with served(variant.path) as engine:
                answers[variant.name] = await greedy_answers(engine, restrictions, questions, False,
                                                             suite.max_tokens)
            bar.update()
    return answers


def run(suite: RestorSuite, out: Path, progress: bool = True) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cache = guard_home() / "bench-cache"
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer_path = resolve_model(None)
    data = load_restor(limit=suite.facts)
    clean, corrupted, model_seconds = prepare_models(suite, data, tokenizer_path, cache)

    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    forget_file = write_jsonl(data_dir / "forget.jsonl", [(f.question, f.wrong_answer) for f in data.corrupt])
    retain_file = write_jsonl(data_dir / "retain.jsonl", [(f.question, f.answer) for f in data.untouched])
    variants, costs = make_variants(suite.weight_methods, corrupted, forget_file, retain_file, cache, progress)
    restrictions, costs[GUARD] = guard_restrictions(data.policy(), corrupted)

    questions = [f.question for f in data.corrupt + data.untouched]
    answers = asyncio.run(_answers(suite, clean, corrupted, variants, restrictions, questions, progress))
    split = {name: Answers(replies[:len(data.corrupt)], replies[len(data.corrupt):]) for name, replies in answers.items()}
    methods = {name: restor_scores(data, split[CLEAN], split[CORRUPTED], split[name]) for name in split}
    for name, row in methods.items():
        row["cost_seconds"] = costs.get(name, {}).get("seconds")
    flagged = [bool(restrictions.detect(Conversation.of_prompt(q))) for q in questions]
    methods[GUARD]["corrupt_flagged"] = statistics.mean(flagged[:len(data.corrupt)])
    methods[GUARD]["untouched_flagged"] = statistics.mean(flagged[len(data.corrupt):])

    with (out / "answers.jsonl").open("w") as f:
        for i, fact in enumerate(data.corrupt + data.untouched):
            f.write(json.dumps({"split": "corrupt" if i < len(data.corrupt) else "untouched",
                                "question": fact.question, "key": fact.key, "wrong_key": fact.wrong_key,
                                **{name: replies[i] for name, replies in answers.items()}}) + "\n")
    results = {
        "suite": suite.name,
        "model": {"clean": model_provenance(tokenizer_path) if suite.base != TINY
                  else "a tiny random Llama (2 layers, hidden 128) taught every fact",
                  "corrupted": str(corrupted)},
        "methods": methods, "costs": costs,
        "provenance": {"data": data.name, "corrupt_facts": len(data.corrupt), "untouched_facts": len(data.untouched),
                       "clean": str(clean), "corrupted": str(corrupted), "model_seconds": model_seconds,
                       "seeds": {"training": 0}, **environment(),
                       "seconds": round(time.perf_counter() - started, 1)},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, out)
    return results
