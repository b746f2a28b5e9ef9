"""The benchmark's starting models: a model fine-tuned on QA, cached by the hash of its recipe.

TOFU's protocol needs two: the "target" model, fine-tuned on every synthetic person (what
unlearning starts from), and the "retain reference", fine-tuned on the retain people only (what
perfect unlearning would look like; forget quality compares against it). Both are full checkpoints,
so the vLLM engine serves the target with the unlearning variants as LoRA adapters on top.
The `tiny` suite starts from a tiny randomly initialised Llama (harness.tiny_model) on the bundled tokenizer instead of
the bundled model, so that everything trains in seconds on a CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from guard.files import cache_key, write_folder_atomically
from harness.tiny_model import tiny_model

TINY = "tiny"  # `base` naming the tiny random model instead of a checkpoint


@dataclass(frozen=True)
class Recipe:
    base: str  # a model path, or TINY
    pairs: tuple[tuple[str, str], ...]  # (question, answer)
    epochs: int
    lr: float
    batch_size: int = 8
    seed: int = 0

    def key(self) -> str:
        return cache_key(asdict(self))


def train_on_answers(model, tokenizer, pairs: Sequence[tuple[str, str]], *, epochs: int, lr: float,
                     batch_size: int, seed: int, desc: str = "fine-tune", progress: bool = True) -> float:
    """Fine-tune `model` in place on the answers to chat-formatted questions; returns the last loss."""
    import torch

    from unlearning.data import Item, collate, encode
    from unlearning.losses import answer_nll, positions_read

    torch.manual_seed(seed)
    encoded = [encode(tokenizer, Item(q, a, chat=True), 256) for q, a in pairs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(encoded) // batch_size)
    model.train()
    loss = float("nan")
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(encoded), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                batch = collate([encoded[i] for i in order[start:start + batch_size]], tokenizer.pad_token_id)
                keep = positions_read(batch["labels"])  # no vocabulary projection on the prompts
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               logits_to_keep=keep).logits
                value = answer_nll(logits, batch["labels"][:, -keep:]).mean()
                optimizer.zero_grad()
                value.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                loss = float(value)
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update()
    model.eval()
    return loss


def finetuned(recipe: Recipe, tokenizer_path: str, cache_dir: Path, name: str, progress: bool = True) -> tuple[Path, float]:
    """The checkpoint `recipe` makes, from the cache when it was made before; and the seconds it took
    to make (0 on a cache hit). The checkpoint folder holds `recipe.json` for provenance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = cache_dir / f"{name}-{recipe.key()}"
    if (out / "recipe.json").exists():
        return out, 0.0
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    if recipe.base == TINY:
        model = tiny_model(tokenizer, recipe.seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(recipe.base, torch_dtype="float32")
    loss = train_on_answers(model, tokenizer, recipe.pairs, epochs=recipe.epochs, lr=recipe.lr,
                            batch_size=recipe.batch_size, seed=recipe.seed, desc=f"fine-tune {name}", progress=progress)
    seconds = round(time.perf_counter() - started, 1)

    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "recipe.json").write_text(json.dumps(
            {**asdict(recipe), "pairs": len(recipe.pairs), "final_loss": loss, "seconds": seconds}, indent=2))
    write_folder_atomically(out, save)
    return out, seconds
