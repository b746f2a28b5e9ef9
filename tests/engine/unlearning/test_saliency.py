"""SalUn's saliency against hand-computed values: the global top fraction, and updates kept inside it."""

from __future__ import annotations

import pytest
import torch

from unlearning.gradients import mean_gradients
from unlearning.saliency import restrict_updates, saliency_mask


def test_the_mask_keeps_the_largest_gradient_magnitudes_across_every_tensor():
    gradients = {"a": torch.tensor([0.1, -5.0, 0.3]), "b": torch.tensor([[2.0, -0.2], [0.05, -4.0]])}
    # |g| sorted: 5, 4, 2, 0.3, 0.2, 0.1, 0.05; the top 3 of 7 (fraction 0.4 -> round(2.8) = 3)
    mask = saliency_mask(gradients, 0.4)
    assert mask["a"].tolist() == [False, True, False]
    assert mask["b"].tolist() == [[True, False], [False, True]]
    assert sum(int(m.sum()) for m in saliency_mask(gradients, 1.0).values()) == 7
    with pytest.raises(ValueError, match="fraction"):
        saliency_mask(gradients, 0.0)


def test_mean_gradients_averages_each_batch_gradient():
    model = torch.nn.Linear(2, 1, bias=False)
    batches = [{"x": torch.tensor([[1.0, -2.0]])}, {"x": torch.tensor([[3.0, 0.0]])}]
    gradients = mean_gradients(model, batches, lambda model, batch: model(batch["x"]).sum())
    assert gradients["weight"].flatten().tolist() == pytest.approx([2.0, -1.0])  # ([1, -2] + [3, 0]) / 2
    assert model.weight.grad is None


def test_an_optimiser_moves_only_the_masked_entries():
    model = torch.nn.Linear(3, 1)  # weight [1, 3] and bias [1]: 4 entries
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    share = restrict_updates(model, {"weight": torch.tensor([[True, False, True]])})  # the bias is not named
    assert share == pytest.approx(2 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
    moved = (model.weight != start["weight"]).flatten().tolist()
    assert moved == [True, False, True] and torch.equal(model.bias, start["bias"])
