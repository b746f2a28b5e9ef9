"""Gradients averaged over a dataset, for the methods that read them before changing a model: SSD's
Fisher diagonal (the mean squared gradient) and SalUn's saliency (the mean gradient's magnitude)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

Batch = dict[str, torch.Tensor]


def mean_gradients(model, batches: Iterable[Batch], loss: Callable[[object, Batch], torch.Tensor],
                   each: Callable[[torch.Tensor], torch.Tensor] = lambda g: g,
                   skip: frozenset[int] = frozenset()) -> dict[str, torch.Tensor]:
    """The mean over `batches` of `each(gradient of loss(model, batch))`, per trainable parameter;
    parameters whose id() is in `skip` are left out (and no gradient is computed for them). No
    gradient is left on the model."""
    skipped = [p for p in model.parameters() if p.requires_grad and id(p) in skip]
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in skip}
    total = {name: torch.zeros_like(p) for name, p in parameters.items()}
    count = 0
    for p in skipped:
        p.requires_grad_(False)
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss(model, batch).backward()
            for name, p in parameters.items():
                if p.grad is not None:
                    total[name] += each(p.grad.detach())
            count += 1
    finally:
        for p in skipped:
            p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    return {name: value / max(count, 1) for name, value in total.items()}
