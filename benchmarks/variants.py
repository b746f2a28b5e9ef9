"""The weight-level variants a suite compares with GUARD: each made by `guard unlearn`'s own trainer
from the suite's starting model, cached by the hash of what made it, and sorted for serving (LoRA
adapters on the target's engine, full checkpoints on an engine each)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from guard.files import cache_key, file_sha256, write_folder_atomically
from server.engines.variants import inspect_variant


@dataclass(frozen=True)
class WeightMethod:
    """One weight-level variant: a name in the results and the `guard unlearn` settings that make it."""
    name: str
    method: str
    settings: dict = field(default_factory=dict)  # UnlearnConfig fields: divergence, lr, max_steps, ...


def make_variant(method: WeightMethod, target: Path, forget: Path, retain: Path, cache: Path,
                 progress: bool) -> tuple[Path, dict]:
    """The variant `method` makes from `target` (a LoRA adapter, or a full checkpoint for the methods
    that change the weights themselves), and what it cost to make, from its model card: {seconds
    (measured when it was made), kind ("training (LoRA)", "training (full)" or "no training")}."""
    from unlearning.config import UnlearnConfig  # unlearning: torch, only when a variant is made
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


def split_variants(variants: dict[str, Path]) -> tuple[list, list]:
    """(LoRA variants, full variants), inspected: the first are served by the target's engine, the
    others by an engine each."""
    inspected = [inspect_variant(name, path) for name, path in variants.items()]
    return [v for v in inspected if v.kind == "lora"], [v for v in inspected if v.kind == "full"]
