"""Unlearning methods: each is a small object that runs the forward passes its loss needs.

The registry `METHODS` is the one extension point: a method names the data it needs (template
answers, retain data, a reference model) and turns a batch into a loss (`step`, for the training
loop), or, `one_shot`, changes the model once without an optimiser (`apply`: SSD). The losses and
the dampening are the pure functions of unlearning.losses and unlearning.dampening.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from unlearning import dampening, losses

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
    name = "flat"
    one_shot = False
    default_lr = 2.5e-4
    needs_templates = True
    needs_retain = False
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "Flat":
        return cls(options.divergence) if options.divergence else cls()

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget, template = batches["forget"], batches["template"]
        forget_logits = _logits(model, forget)
        p_forget = losses.answer_token_prob(forget_logits, forget["labels"])
        p_template = losses.answer_token_prob(_logits(model, template), template["labels"])
        return StepResult(losses.flat_loss(p_template, p_forget, self.divergence), p_forget.detach().mean().item())


@dataclass(frozen=True)
class GradientAscent:
    name = "ga"
    one_shot = False
    default_lr = 4e-4
    needs_templates = False
    needs_retain = False
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "GradientAscent":
        return cls()

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget = batches["forget"]
        logits = _logits(model, forget)
        loss = losses.gradient_ascent_loss(losses.answer_nll(logits, forget["labels"]))
        return StepResult(loss, _forget_prob(logits, forget["labels"]))


@dataclass(frozen=True)
class GradientDifference:
    retain_weight: float = 1.0
    name = "graddiff"
    one_shot = False
    default_lr = 4e-4
    needs_templates = False
    needs_retain = True
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "GradientDifference":
        return cls(options.retain_weight)

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
    name = "npo"
    one_shot = False
    default_lr = 1e-4
    needs_templates = False
    needs_retain = False
    needs_reference = True

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "NegativePreference":
        return cls(options.beta)

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget = batches["forget"]
        logits = _logits(model, forget)
        with torch.no_grad():
            log_p_reference = losses.answer_log_prob_sum(reference(forget), forget["labels"])
        loss = losses.npo_loss(losses.answer_log_prob_sum(logits, forget["labels"]), log_p_reference, self.beta)
        return StepResult(loss, _forget_prob(logits, forget["labels"]))


@dataclass(frozen=True)
class SelectiveSynapticDampening:
    """SSD: no training. Parameters far more important to the forget answers than to the retain
    answers (diagonal Fisher information) are dampened (unlearning.dampening)."""

    alpha: float = 10.0
    dampening: float = 1.0
    name = "ssd"
    one_shot = True
    default_lr = 0.0  # no optimiser
    needs_templates = False
    needs_retain = True
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "SelectiveSynapticDampening":
        return cls(options.alpha, options.dampening)

    def apply(self, model, batches: dict[str, list[Batch]]) -> float:
        """Dampen `model` in place; the share of its parameters dampened."""
        def nll(model, batch: Batch) -> torch.Tensor:
            return losses.answer_nll(_logits(model, batch), batch["labels"]).mean()
        # Not the token embeddings (and the output matrix tied to them): a token's row has gradient only
        # where the token occurs, so every token of the forget data the retain data lacks would be erased.
        embeddings = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
        frozen = [p for p in model.parameters() if id(p) in embeddings and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            forget = dampening.importance(model, batches["forget"], nll)
            retain = dampening.importance(model, batches["retain"], nll)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return dampening.dampen(model, forget, retain, self.alpha, self.dampening)


class MethodOptions(Protocol):
    """What a method may read of a run's settings (unlearning.config.UnlearnConfig)."""
    divergence: str | None  # FLAT's (None: its default)
    beta: float
    retain_weight: float
    alpha: float
    dampening: float


# The one registry: name -> method. Default learning rates are LoRA rates (full fine-tuning takes a
# tenth); FLAT's and GA's are the lowest of a sweep on the bundled model (24 Harry Potter QA, 30
# steps) at which the variant stopped naming the forget answers (README, "Measured").
METHODS = {method.name: method for method in (Flat, GradientAscent, GradientDifference, NegativePreference,
                                              SelectiveSynapticDampening)}
