"""The benchmark suites, sized for the machine that runs them.

- `tiny`: a tiny random Llama taught a handful of synthetic people; base, GUARD, FLAT (KL) and
  gradient ascent. Minutes on a CPU; runs in CI.
- `small`: the bundled SmolLM2-135M taught enough synthetic people for a meaningful KS test; every
  FLAT divergence, gradient ascent, GradDiff and NPO; utility on 40 of the 128 retain questions
  (evenly spaced, as TOFU evaluates a retain subset). Meant for under 30 minutes on a 2-core CPU.
- `known`: the bundled model as it is, on what it already knows (Harry Potter to forget; other
  books, capitals and founders to keep). No fine-tuning, so no retain reference: forget quality
  is not defined there; leak rate and utility are. Every method, SSD and SalUn included, and each
  LoRA variant's served tokens/s merged into the weights as well as unmerged.
- `restor`: RESTOR-style recovery on the bundled model (benchmarks.restor): facts it states
  correctly are corrupted by fine-tuning on wrong answers, every method unlearns the corruption, and
  recovery is the share of the original answers it gives again. `restor-tiny`: the same on a tiny
  model taught the facts first; minutes on a CPU, runs in CI.
Larger suites (TOFU, MUSE) load real data through benchmarks.loaders and want a GPU.

Each kind of suite is defined beside the runner that runs it (benchmarks.runner.Suite,
benchmarks.restor.RestorSuite); this registry names the suites and imports the runners, never the
other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmarks.finetune import TINY
from benchmarks.items import BenchData
from benchmarks.known import load_known
from benchmarks.restor import RestorSuite
from benchmarks.runner import Suite
from benchmarks.synthetic import generate
from benchmarks.variants import WeightMethod
from runtime.models import DEFAULT_MODEL


def _synthetic(**kwargs) -> Callable[[], BenchData]:
    def make() -> BenchData:
        return generate(**kwargs)
    return make


SUITES = {
    "tiny": Suite(
        "tiny", _synthetic(n_people=6, questions_per_person=6, forget_people=2, seed=0), TINY,
        (WeightMethod("flat", "flat", {"divergence": "kl", "lr": 5e-3, "max_steps": 12}),
         WeightMethod("ga", "ga", {"lr": 5e-3, "max_steps": 12})),
        finetune_epochs=40, finetune_lr=3e-3, max_tokens=32, throughput_runs=2, throughput_seconds=2.0),
    "small": Suite(
        "small", _synthetic(n_people=20, questions_per_person=8, forget_people=4, seed=0), DEFAULT_MODEL,
        # Rates: per method, the lowest of a sweep on this target that brought the forget answers'
        # probability below 0.5 (README: "the small suite"); the defaults of `guard unlearn` barely move it.
        (*(WeightMethod(f"flat-{d}", "flat", {"divergence": d, "lr": 6e-4}) for d in ("kl", "js", "pearson", "tv")),
         WeightMethod("ga", "ga", {"lr": 5e-4}), WeightMethod("graddiff", "graddiff", {"lr": 1e-3}),
         WeightMethod("npo", "npo", {"lr": 5e-4})),
        finetune_epochs=5, finetune_lr=1e-4, retain_eval=40),
    "known": Suite(
        "known", load_known, DEFAULT_MODEL,
        (WeightMethod("flat", "flat", {"divergence": "kl"}), WeightMethod("ga", "ga"),
         WeightMethod("graddiff", "graddiff"), WeightMethod("npo", "npo"),
         WeightMethod("ssd", "ssd", {"lora": False, "alpha": 100.0}), WeightMethod("salun", "salun", {"lora": False})),
        merged_throughput=True),
    "restor": RestorSuite(
        "restor", DEFAULT_MODEL,
        # The corrupted model states its wrong answers at p ~ 1, as `small`'s target its facts: the
        # LoRA methods run at the rates `small`'s sweep found for such a target, not the defaults.
        (WeightMethod("flat", "flat", {"divergence": "kl", "lr": 6e-4}), WeightMethod("ga", "ga", {"lr": 5e-4}),
         WeightMethod("graddiff", "graddiff", {"lr": 1e-3}), WeightMethod("npo", "npo", {"lr": 5e-4}),
         WeightMethod("ssd", "ssd", {"lora": False, "alpha": 100.0}),
         WeightMethod("salun", "salun", {"lora": False})),
        corrupt_epochs=10, corrupt_lr=1e-4),
    "restor-tiny": RestorSuite(
        "restor-tiny", TINY,
        # LoRA methods only: a full variant needs an engine of its own, about 25 s of CI time each
        (WeightMethod("flat", "flat", {"divergence": "kl", "lr": 5e-3, "max_steps": 12}),
         WeightMethod("ga", "ga", {"lr": 5e-3, "max_steps": 12})),
        corrupt_epochs=30, corrupt_lr=1e-3, facts=8, teach_epochs=80, teach_lr=3e-3),
}


class BenchOptions(BaseModel):
    """`guard bench`'s options."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str = Field(default="tiny", description="tiny (CI, minutes), small (bundled model, < 30 min), known, "
                                                   "restor or restor-tiny (CI, minutes)")
    out: Path = Field(description="folder for results.json, report.md, plots and answers")

    @field_validator("suite")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SUITES:
            raise ValueError(f"unknown {name!r}; known: {', '.join(SUITES)}")
        return name

    @property
    def chosen(self) -> Suite | RestorSuite:
        return SUITES[self.suite]
