"""SalUn's weight saliency (Fan et al., ICLR 2024): only the parameters the forget data pulls on
hardest are unlearned. The saliency of a parameter is the magnitude of the forget loss's gradient
over the forget data; the mask keeps the top `fraction` of all parameters (one threshold across
every tensor, as the paper's single gamma), and training then updates those alone. The selection is
the pure function `saliency_mask`; `restrict_updates` applies a mask to a model's gradients."""

from __future__ import annotations

import torch


def saliency_mask(gradients: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """True for the `fraction` of all entries, across tensors, with the largest |gradient| (ties at
    the threshold are kept, so slightly more may be selected)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    magnitudes = torch.cat([g.abs().flatten() for g in gradients.values()])
    keep = max(1, round(fraction * magnitudes.numel()))
    threshold = magnitudes.kthvalue(magnitudes.numel() - keep + 1).values  # the keep-th largest
    return {name: g.abs() >= threshold for name, g in gradients.items()}


def restrict_updates(model, mask: dict[str, torch.Tensor]) -> float:
    """Zero, from now on, every gradient of `model` outside `mask` (parameters not named in it get
    none): an optimiser without weight decay then moves the masked entries only. The share of the
    model's trainable entries left free to move."""
    free = total = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        keep = mask.get(name, torch.zeros((), dtype=torch.bool))
        p.register_hook(lambda grad, keep=keep: grad * keep)
        free += int(keep.sum()) if keep.dim() else 0
        total += p.numel()
    return free / max(total, 1)
