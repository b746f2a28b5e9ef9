"""Unlearning methods: each is a small object that runs the forward passes its loss needs.

The registry `METHODS` is the one extension point: a method names the batches it reads (`roles`:
forget answers, template answers, random answers, retain data) and whether it needs a reference
model, and turns those batches into a loss (`step`, for the training loop), or, `one_shot`, changes
the model once without an optimiser (`apply`: SSD). A method may `prepare` the model before
training (SalUn's saliency mask). The losses, the dampening and the saliency are the pure functions
of unlearning.losses, unlearning.dampening and unlearning.saliency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from unlearning import dampening, losses, saliency
from unlearning.gradients import Batch, mean_gradients

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
    full_only = False
    default_lr = 2.5e-4
    roles = ("forget", "template")
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
    full_only = False
    default_lr = 4e-4
    roles = ("forget",)
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
    full_only = False
    default_lr = 4e-4
    roles = ("forget", "retain")
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
    full_only = False
    default_lr = 1e-4
    roles = ("forget",)
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
    full_only = True  # it dampens the model's own weights
    default_lr = 0.0  # no optimiser
    roles = ("forget", "retain")
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "SelectiveSynapticDampening":
        return cls(options.alpha, options.dampening)

    def apply(self, model, batches: dict[str, list[Batch]]) -> float:
        """Dampen `model` in place; the share of its parameters dampened."""
        # Not the token embeddings (and the output matrix tied to them): a token's row has gradient only
        # where the token occurs, so every token of the forget data the retain data lacks would be erased.
        embeddings = frozenset({id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)})
        forget = dampening.importance(model, batches["forget"], _mean_nll, skip=embeddings)
        retain = dampening.importance(model, batches["retain"], _mean_nll, skip=embeddings)
        return dampening.dampen(model, forget, retain, self.alpha, self.dampening)


@dataclass(frozen=True)
class SaliencyUnlearning:
    """SalUn: a mask of the parameters with the largest forget-loss gradient (the top `fraction`),
    then training of those alone: the forget questions relabelled with random retain answers
    (`forget_loss` "random") or gradient ascent on the forget answers ("ga"), plus the retain loss."""

    fraction: float = 0.5
    forget_loss: str = "random"
    retain_weight: float = 1.0
    name = "salun"
    one_shot = False
    full_only = True  # the mask is over the model's own weights
    default_lr = 3e-3  # full fine-tuning takes a tenth: 3e-4 (README, "Measured")
    roles = ("forget", "random", "retain")
    needs_reference = False

    @classmethod
    def from_options(cls, options: "MethodOptions") -> "SaliencyUnlearning":
        return cls(options.saliency, options.forget_loss, options.retain_weight)

    def prepare(self, model, batches: dict[str, list[Batch]]) -> float:
        """Restrict training to the salient parameters; the share of parameters it may change."""
        gradients = mean_gradients(model, batches["forget"], _mean_nll)
        return saliency.restrict_updates(model, saliency.saliency_mask(gradients, self.fraction))

    def step(self, model, batches: dict[str, Batch], reference: Reference | None) -> StepResult:
        forget, retain = batches["forget"], batches["retain"]
        retain_nll = losses.answer_nll(_logits(model, retain), retain["labels"])
        if self.forget_loss == "ga":
            logits = _logits(model, forget)
            loss = losses.gradient_difference_loss(losses.answer_nll(logits, forget["labels"]), retain_nll,
                                                   self.retain_weight)
            return StepResult(loss, _forget_prob(logits, forget["labels"]))
        relabelled = batches["random"]
        loss = losses.random_label_loss(losses.answer_nll(_logits(model, relabelled), relabelled["labels"]),
                                        retain_nll, self.retain_weight)
        with torch.no_grad():
            return StepResult(loss, _forget_prob(_logits(model, forget), forget["labels"]))


def _mean_nll(model, batch: Batch) -> torch.Tensor:
    return losses.answer_nll(_logits(model, batch), batch["labels"]).mean()


class MethodOptions(Protocol):
    """What a method may read of a run's settings (unlearning.config.UnlearnConfig)."""
    divergence: str | None  # FLAT's (None: its default)
    beta: float
    retain_weight: float
    alpha: float
    dampening: float
    saliency: float
    forget_loss: str


# The one registry: name -> method. Default learning rates are LoRA rates (full fine-tuning takes a
# tenth); FLAT's and GA's are the lowest of a sweep on the bundled model (24 Harry Potter QA, 30
# steps) at which the variant stopped naming the forget answers (README, "Measured").
METHODS = {method.name: method for method in (Flat, GradientAscent, GradientDifference, NegativePreference,
                                              SelectiveSynapticDampening, SaliencyUnlearning)}
