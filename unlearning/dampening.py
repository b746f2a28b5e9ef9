"""Selective Synaptic Dampening (SSD; Foster, Schoepf and Brintrup, AAAI 2024): unlearning without
training. The diagonal of the Fisher information, estimated as the mean squared gradient of the
answer loss, says how much each parameter matters to the forget data (I_f) and to the retain data
(I_r). Parameters that matter disproportionately to the forget data (I_f > alpha * I_r) are scaled
down by lambda * I_r / I_f, never up (the factor is capped at 1); every other parameter is left as
it is. The per-parameter math is the pure function `dampening_factors`; `importance` and `dampen`
apply it to a model."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from unlearning.gradients import Batch, mean_gradients


def dampening_factors(forget: torch.Tensor, retain: torch.Tensor, alpha: float, lam: float) -> torch.Tensor:
    """The factor each parameter is multiplied by: min(lam * I_r / I_f, 1) where I_f > alpha * I_r, else 1."""
    selected = forget > alpha * retain
    factor = torch.clamp(lam * retain / forget.clamp(min=torch.finfo(forget.dtype).tiny), max=1.0)
    return torch.where(selected, factor, torch.ones_like(factor))


def importance(model, batches: Iterable[Batch], loss: Callable[[object, Batch], torch.Tensor],
               skip: frozenset[int] = frozenset()) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information of each trainable parameter not in `skip` (by id()): the mean
    over `batches` of the squared gradient of `loss(model, batch)`."""
    return mean_gradients(model, batches, loss, torch.square, skip)


@torch.no_grad()
def dampen(model, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor], alpha: float,
           lam: float) -> float:
    """Scale `model`'s parameters in place by their dampening factors; the share of parameters dampened."""
    dampened = total = 0
    for name, p in model.named_parameters():
        if name not in forget:
            continue
        factor = dampening_factors(forget[name], retain[name], alpha, lam)
        p.mul_(factor.to(p.dtype))
        dampened += int((factor < 1).sum())
        total += factor.numel()
    return dampened / max(total, 1)
