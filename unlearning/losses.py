"""Pure loss functions of weight-level unlearning, on tensors only (no model, no data loading).

Conventions: `logits[B, T, V]` from a causal LM and `labels[B, T]` holding the target token ids
at answer positions and IGNORE (-100) at prompt and padding positions, as transformers does;
position t's logits predict token t+1, so the functions shift by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE = -100


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each answer token and the answer mask, both [B, T-1]."""
    logits, targets = logits[:, :-1, :].float(), labels[:, 1:]  # [B, T-1, V], [B, T-1]
    mask = targets != IGNORE
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return picked * mask, mask


def positions_read(labels: torch.Tensor) -> int:
    """How many trailing positions' logits the answer losses read: from the one before the batch's
    first answer token to the end. Asked for only these (transformers' `logits_to_keep`), a causal
    LM skips its vocabulary projection on the prompts; every loss here gives the same values on
    `labels[:, -n:]` and those logits."""
    answer_positions = (labels != IGNORE).any(0).nonzero()
    if len(answer_positions) == 0:
        return labels.shape[1]
    return labels.shape[1] - max(int(answer_positions[0]) - 1, 0)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens of each sequence: [B]."""
    picked, mask = token_log_probs(logits, labels)
    return -picked.sum(-1) / mask.sum(-1).clamp(min=1)


def answer_log_prob_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(y|q) of each whole answer, summed over its tokens: [B]."""
    picked, _ = token_log_probs(logits, labels)
    return picked.sum(-1)


def answer_token_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """FLAT's p(y|q): the average probability of the answer's tokens, prompt and padding masked: [B]."""
    picked, mask = token_log_probs(logits, labels)
    return (picked.exp() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@dataclass(frozen=True)
class Divergence:
    """An f-divergence in FLAT's variational form: activation g and the conjugate composed with it."""

    g: Callable[[torch.Tensor], torch.Tensor]
    conjugate_g: Callable[[torch.Tensor], torch.Tensor]  # f*(g(x))


DIVERGENCES: dict[str, Divergence] = {
    "kl": Divergence(lambda x: x, lambda x: torch.exp(x - 1)),
    "pearson": Divergence(lambda x: x, lambda x: x * x / 4 + x),
    "js": Divergence(lambda x: math.log(2) - F.softplus(-x),  # log 2 - log(1 + e^-x)
                     lambda x: x + F.softplus(-x) - math.log(2)),
    "tv": Divergence(lambda x: torch.tanh(x) / 2, lambda x: torch.tanh(x) / 2),
}


def divergence(name: str) -> Divergence:
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; known: {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]


def flat_loss(p_template: torch.Tensor, p_forget: torch.Tensor, name: str = "kl") -> torch.Tensor:
    """FLAT: L = -g(p(y_e|q)) + f*(g(p(y_f|q))), averaged over the batch. Inputs: [B] probabilities."""
    d = divergence(name)
    return (-d.g(p_template) + d.conjugate_g(p_forget)).mean()


def gradient_ascent_loss(forget_nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: L = -CE(y_f|q), from the per-sequence answer NLL [B]."""
    return -forget_nll.mean()


def gradient_difference_loss(forget_nll: torch.Tensor, retain_nll: torch.Tensor,
                             retain_weight: float = 1.0) -> torch.Tensor:
    """GradDiff: ascend on the forget answers, descend on the retain answers."""
    return -forget_nll.mean() + retain_weight * retain_nll.mean()


def random_label_loss(random_nll: torch.Tensor, retain_nll: torch.Tensor, retain_weight: float = 1.0) -> torch.Tensor:
    """SalUn's random labelling: descend on the forget questions paired with random answers, and on the retain answers."""
    return random_nll.mean() + retain_weight * retain_nll.mean()


def npo_loss(log_p_model: torch.Tensor, log_p_reference: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO: -(2/β) logsigmoid(-β (log p_θ(y|q) - log p_ref(y|q))), log p summed over the answer; mean over [B]."""
    return (-(2.0 / beta) * F.logsigmoid(-beta * (log_p_model - log_p_reference))).mean()
