"""The unlearning training loop: forget (and retain) data in, an adapter or checkpoint out.

Reads top to bottom: load data, load the model (LoRA by default), measure the forget answers'
probability, train with AdamW under a warm-up schedule, measure again, write the variant and its
model card. The variant is written to a staging folder and moved into place at the end, so an
interrupted run leaves no half-written variant behind.
"""

from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from guard.files import write_folder_atomically
from runtime.models import resolve_model
from unlearning import card
from unlearning.config import UnlearnConfig
from unlearning.data import Encoded, Item, collate, encode, load_items, with_random_answers, with_template_answers
from unlearning.losses import answer_token_prob
from unlearning.methods import METHODS

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Summary:
    out: Path
    kind: str  # "lora", "full" or "merged" (LoRA training, written as a full checkpoint)
    precision: str  # "bf16" (autocast) or "fp32"
    steps: int
    seconds: float
    first_loss: float | None  # None: no optimiser steps (a one-shot method)
    last_loss: float | None
    forget_prob_before: float
    forget_prob_after: float
    selected: float | None = None  # the share of parameters the method chose to change (SSD, SalUn)


def learning_rate_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to zero at `total` (step counts from 0)."""
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    return base * max(0.0, (total - step) / max(1, total - warmup))


def unlearn(config: UnlearnConfig, progress: bool = True) -> Summary:
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    method = METHODS[config.method].from_options(config)

    # Data: every file is read and checked before the model is loaded.
    forget_items = load_items(config.forget, "forget")
    retain_items = load_items(config.retain, "retain") if config.retain else []
    model_path = resolve_model(config.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = {role: [encode(tokenizer, item, config.max_length) for item in _items(role, forget_items, retain_items,
                                                                                  config.seed)]
            for role in method.roles}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, reference = _load_model(model_path, config, method, device)
    bf16 = config.use_bf16(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()

    def measure() -> float:
        model.eval()
        with torch.no_grad(), autocast:
            value = _mean_answer_prob(model, data["forget"], pad_id, config.batch_size, device)
        model.train()
        return value

    prob_before = measure()
    started = time.perf_counter()
    losses, selected = [], None
    if method.one_shot or hasattr(method, "prepare"):  # SSD changes the model once; SalUn masks it first
        whole = {role: [_to(collate(data[role][i:i + config.batch_size], pad_id), device)
                        for i in range(0, len(data[role]), config.batch_size)] for role in method.roles}
        with autocast:
            selected = (method.apply if method.one_shot else method.prepare)(model, whole)
    if not method.one_shot:
        losses = _train(model, method, reference, data, pad_id, config, device, autocast, progress)
    seconds = time.perf_counter() - started
    kind = ("merged" if config.merge else "lora") if config.lora else "full"
    summary = Summary(config.out, kind, "bf16" if bf16 else "fp32", len(losses),
                      round(seconds, 1), losses[0] if losses else None, losses[-1] if losses else None,
                      prob_before, measure(), selected)

    # Export: the adapter (LoRA) or a whole bf16 checkpoint (--full, or --merge: the adapter merged into
    # the weights) with its tokenizer, and the model card.
    def export(staging: Path) -> None:
        if config.lora and not config.merge:
            model.save_pretrained(staging)
        else:
            write_checkpoint(model.merge_and_unload() if config.lora else model, tokenizer, staging)
        card.write(staging, card.build(config, model_path, len(forget_items), len(retain_items), summary, losses))
    write_folder_atomically(config.out, export)
    return summary


def write_checkpoint(model, tokenizer, folder: Path) -> None:
    """A full bf16 checkpoint with its tokenizer, as vLLM serves it (`--full`, `--merge`)."""
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _load_model(model_path: str, config: UnlearnConfig, method, device: str):
    """The model to train (float32 weights; LoRA on every projection unless --full), and the frozen
    reference the method compares with (None if it needs none)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
    if config.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                                                 target_modules=LORA_MODULES, task_type="CAUSAL_LM"))
    if not method.needs_reference:
        return model, None
    if config.lora:
        def reference(batch):  # the base model is the adapter switched off
            with model.disable_adapter():
                return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    else:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)

        def reference(batch):
            return frozen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return model, reference


def _train(model, method, reference, data: dict[str, list[Encoded]], pad_id: int, config: UnlearnConfig,
           device: str, autocast, progress: bool) -> list[float]:
    """AdamW under the warm-up schedule, over the requested epochs capped by --max-steps; each step's loss."""
    forget, retain = data["forget"], data.get("retain", [])
    total = math.ceil(config.epochs * math.ceil(len(forget) / config.batch_size) / config.grad_accum)
    total = min(total, config.max_steps) if config.max_steps else total
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    batch_stream = _batches(len(forget), config.batch_size, config.seed)
    retain_rng = random.Random(config.seed + 1)
    losses: list[float] = []
    with tqdm(total=total, desc=f"unlearn {config.method}", unit="step", disable=not progress) as bar:
        for step in range(total):
            step_started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config.learning_rate, config.warmup_steps, total)
            optimizer.zero_grad(set_to_none=True)
            step_loss, step_prob = 0.0, 0.0
            for _ in range(config.grad_accum):  # one optimizer step over `grad_accum` micro-batches
                rows = next(batch_stream)
                batches = {role: _to(collate([data[role][i] for i in rows], pad_id), device)
                           for role in method.roles if role != "retain"}  # row-aligned with the forget data
                if retain:
                    batches["retain"] = _to(collate(retain_rng.sample(retain, min(len(rows), len(retain))), pad_id),
                                            device)
                with autocast:
                    result = method.step(model, batches, reference)
                (result.loss / config.grad_accum).backward()
                step_loss += result.loss.item() / config.grad_accum
                step_prob += result.forget_prob / config.grad_accum
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            losses.append(step_loss)
            bar.set_postfix(loss=f"{step_loss:.4f}", p_forget=f"{step_prob:.3f}",
                            s_step=f"{time.perf_counter() - step_started:.2f}")
            bar.update()
    return losses


def _items(role: str, forget: list[Item], retain: list[Item], seed: int) -> list[Item]:
    """The examples of one of a method's roles: the forget and retain data, or the forget questions
    with template (refusal) or random (retain) answers."""
    if role == "template":
        return with_template_answers(forget, seed)
    if role == "random":
        return with_random_answers(forget, retain, seed)
    return retain if role == "retain" else forget


def _batches(n: int, batch_size: int, seed: int):
    """Endless shuffled batches of row indices, one reshuffle per epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _mean_answer_prob(model, examples: list[Encoded], pad_id: int, batch_size: int, device: str) -> float:
    total = 0.0
    for start in range(0, len(examples), batch_size):
        batch = _to(collate(examples[start:start + batch_size], pad_id), device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total += answer_token_prob(logits, batch["labels"]).sum().item()
    return total / len(examples)
