"""Unlearning methods: each is a small object that runs the forward passes its loss needs.

The registry `METHODS` is the one extension point: a method names the data it needs (template
answers, retain data, a reference model) and turns a batch into a loss. The losses themselves are
the pure functions of unlearning.losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from unlearning import losses

Batch = dict[str, torch.Tensor]
Reference = Callable[[Batch], torch.Tensor]  # logits of the model before unlearning, without grad


@dataclass(frozen=True)
class StepResult:
    loss: torch.Tensor
    forget_prob: float  # mean FLAT-style answer token probability of the forget answers in the batch


def _logits(model, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _forget_prob(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return losses.answer_token_prob(logits.detach(), labels).mean().item()


@dataclass(frozen=True)
class Flat:
    """FLAT: raise the template answer's probability, lower the forget answer's (forget data only)."""

    divergence: str = "kl"
    needs_templates = True
    needs_retain = False
    needs_reference = False

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget, template = batches["forget"], batches["template"]
        forget_logits = _logits(model, forget)
        p_forget = losses.answer_token_prob(forget_logits, forget["labels"])
        p_template = losses.answer_token_prob(_logits(model, template), template["labels"])
        return StepResult(losses.flat_loss(p_template, p_forget, self.divergence), p_forget.detach().mean().item())


@dataclass(frozen=True)
class GradientAscent:
    needs_templates = False
    needs_retain = False
    needs_reference = False

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget = batches["forget"]
        logits = _logits(model, forget)
        loss = losses.gradient_ascent_loss(losses.answer_nll(logits, forget["labels"]))
        return StepResult(loss, _forget_prob(logits, forget["labels"]))


@dataclass(frozen=True)
class GradientDifference:
    retain_weight: float = 1.0
    needs_templates = False
    needs_retain = True
    needs_reference = False

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget, retain = batches["forget"], batches["retain"]
        logits = _logits(model, forget)
        loss = losses.gradient_difference_loss(losses.answer_nll(logits, forget["labels"]),
                                               losses.answer_nll(_logits(model, retain), retain["labels"]),
                                               self.retain_weight)
        return StepResult(loss, _forget_prob(logits, forget["labels"]))


@dataclass(frozen=True)
class NegativePreference:
    """NPO: push the forget answer's likelihood below the reference model's, with a bounded loss."""

    beta: float = 0.1
    needs_templates = False
    needs_retain = False
    needs_reference = True

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget = batches["forget"]
        logits = _logits(model, forget)
        with torch.no_grad():
            log_p_reference = losses.answer_log_prob_sum(reference(forget), forget["labels"])
        loss = losses.npo_loss(losses.answer_log_prob_sum(logits, forget["labels"]), log_p_reference, self.beta)
        return StepResult(loss, _forget_prob(logits, forget["labels"]))


METHODS = {"flat": Flat, "ga": GradientAscent, "graddiff": GradientDifference, "npo": NegativePreference}
# LoRA rates; full fine-tuning takes a tenth. FLAT and GA: the lowest rates of a sweep on the bundled model
# (24 Harry Potter QA, 30 steps) at which the variant stopped naming the forget answers (README, "Measured").
DEFAULT_LR = {"flat": 2.5e-4, "ga": 4e-4, "graddiff": 4e-4, "npo": 1e-4}


def build_method(name: str, *, divergence: str = "kl", beta: float = 0.1, retain_weight: float = 1.0):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    if name == "flat":
        losses.divergence(divergence)  # unknown names fail here, before any training
        return Flat(divergence)
    if name == "graddiff":
        return GradientDifference(retain_weight)
    if name == "npo":
        return NegativePreference(beta)
    return GradientAscent()
