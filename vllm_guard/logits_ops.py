"""Pure tensor functions for the per-step guard math, apart from any engine adapter."""

from __future__ import annotations

import torch


def apply_sparse_bias(
    logits: torch.Tensor,  # [B, V] float, modified in place
    rows: torch.Tensor,  # [N] long, row of each entry
    cols: torch.Tensor,  # [N] long, token id of each entry
    values: torch.Tensor,  # [N] float, added to logits[row, col]; -inf blocks the token
) -> torch.Tensor:
    """logits[rows[i], cols[i]] += values[i] for all i, in one indexed write.

    Duplicate (row, col) pairs accumulate; -inf absorbs any finite addition.
    """
    if rows.numel():
        logits.index_put_((rows, cols), values.to(logits.dtype), accumulate=True)
    return logits


def gather_row_biases(
    row_indices: list[int],  # [R] batch rows, one per guarded row
    biases: list[tuple[torch.Tensor, torch.Tensor]],  # [R] (cols[n_r], values[n_r]) per row
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate per-row sparse biases into the (rows[N], cols[N], values[N]) of one write."""
    if not row_indices:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty, torch.empty(0, device=device)
    counts = torch.tensor([c.numel() for c, _ in biases], dtype=torch.long, device=device)
    rows = torch.repeat_interleave(torch.tensor(row_indices, dtype=torch.long, device=device), counts)
    cols = torch.cat([c for c, _ in biases])
    values = torch.cat([v for _, v in biases])
    return rows, cols, values
