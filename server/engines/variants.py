"""Served variants: unlearned models answering beside the base model (`--variant NAME=PATH`).

A variant is a LoRA adapter (a folder with adapter_config.json), served by the base model's engine
through LoRA requests, or a full checkpoint (a folder with config.json), served by an engine of its
own. Each is listed twice in /v1/models: `NAME` answers unguarded (weight-level unlearning alone)
and `NAME+guard` answers through the guard, so both approaches, and their combination, answer the
same requests. The base model's own name always answers guarded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

GUARDED_SUFFIX = "+guard"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's max_lora_rank accepts


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    kind: Literal["lora", "full"]
    lora_rank: int | None = None
    max_positions: int | None = None  # a full checkpoint's context limit (config.json), if it states one


def parse_variant(text: str) -> tuple[str, Path]:
    """`NAME=PATH` from the command line."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def inspect_variant(name: str, path: Path) -> Variant:
    """What the folder holds. Raises ValueError naming the variant when it cannot be served."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"--variant {name}: a name is letters, digits, '.', '_' and '-' "
                         f"(the suffix {GUARDED_SUFFIX} is added by the server)")
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"--variant {name}: {path} is not a folder")
    adapter_config = path / "adapter_config.json"
    if adapter_config.exists():
        config = json.loads(adapter_config.read_text())
        if config.get("peft_type") != "LORA":
            raise ValueError(f"--variant {name}: {path} holds a {config.get('peft_type')} adapter; only LoRA is served")
        rank = int(config.get("r", 8))
        if rank > LORA_RANKS[-1]:
            raise ValueError(f"--variant {name}: LoRA rank {rank} is above the engine's maximum {LORA_RANKS[-1]}")
        return Variant(name, path, "lora", rank)
    if (path / "config.json").exists():
        max_positions = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
        return Variant(name, path, "full", max_positions=max_positions)
    raise ValueError(f"--variant {name}: {path} holds neither a LoRA adapter (adapter_config.json) "
                     "nor a checkpoint (config.json)")


def engine_lora_rank(variants: list[Variant]) -> int | None:
    """The smallest rank vLLM accepts that fits every LoRA variant; None when there is none."""
    ranks = [v.lora_rank for v in variants if v.kind == "lora"]
    if not ranks:
        return None
    return next(r for r in LORA_RANKS if r >= max(ranks))


def load_variants(variants: dict[str, Path], base_model_path: str) -> list[Variant]:
    """Inspect every variant. A full checkpoint must keep the base model's vocabulary, since the
    guard's compiled token ids are the base tokenizer's."""
    found = [inspect_variant(name, path) for name, path in variants.items()]
    full = [v for v in found if v.kind == "full"]
    if full:
        from transformers import AutoTokenizer

        base_vocab = AutoTokenizer.from_pretrained(base_model_path).get_vocab()
        for variant in full:
            if AutoTokenizer.from_pretrained(variant.path).get_vocab() != base_vocab:
                raise ValueError(f"--variant {variant.name}: its tokenizer differs from the base model's; "
                                 "a variant must keep the base model's vocabulary")
    return found


def model_names(base: str, variants: list[Variant]) -> dict[str, tuple[Variant | None, bool]]:
    """Every name served: base (guarded), then NAME (plain) and NAME+guard per variant."""
    names: dict[str, tuple[Variant | None, bool]] = {base: (None, True)}
    for variant in variants:
        for name, guarded in ((variant.name, False), (variant.name + GUARDED_SUFFIX, True)):
            if name in names:
                raise ValueError(f"--variant {variant.name}: the name {name} is already served")
            names[name] = (variant, guarded)
    return names
