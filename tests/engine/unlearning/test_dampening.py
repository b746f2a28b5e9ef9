"""SSD's dampening against hand-computed values: selection, the factor, its cap, the Fisher diagonal."""

from __future__ import annotations

import pytest
import torch

from unlearning.dampening import dampen, dampening_factors, importance


def test_only_parameters_far_more_important_to_the_forget_data_are_dampened():
    forget = torch.tensor([4.0, 1.0, 0.0, 9.0, 3.0])
    retain = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0])
    # alpha 2: 4 > 2, 1 < 2, 0 < 2, 9 > 1, 3 > 0 -> selected 0, 3, 4; factor lam * r / f, at most 1
    assert dampening_factors(forget, retain, alpha=2.0, lam=1.0).tolist() == pytest.approx(
        [0.25, 1.0, 1.0, 0.5 / 9, 0.0])
    # lam 8: 8 * 1 / 4 = 2 is capped at 1 (never amplified); 8 * 0.5 / 9 = 0.444
    assert dampening_factors(forget, retain, alpha=2.0, lam=8.0).tolist() == pytest.approx(
        [1.0, 1.0, 1.0, 4.0 / 9, 0.0])


def test_importance_is_the_mean_squared_gradient_and_dampen_scales_in_place():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    batches = [{"x": torch.tensor([[1.0, 0.0]])}, {"x": torch.tensor([[0.0, 3.0]])}]

    def loss(model, batch):  # d(w . x)/dw = x
        return model(batch["x"]).sum()
    fisher = importance(model, batches, loss)
    assert fisher["weight"].flatten().tolist() == pytest.approx([0.5, 4.5])  # ([1, 0]^2 + [0, 3]^2) / 2
    share = dampen(model, fisher, {"weight": torch.tensor([[1.0, 0.5]])}, alpha=2.0, lam=1.0)
    # 0.5 < 2 * 1: kept; 4.5 > 2 * 0.5: scaled by 0.5 / 4.5
    assert model.weight.flatten().tolist() == pytest.approx([1.0, 2.0 * 0.5 / 4.5]) and share == 0.5
    assert model.weight.grad is None  # no gradient left behind
