"""Each loss against values computed by hand on small tensors (math module, not torch)."""

from __future__ import annotations

import math

import pytest
import torch

from unlearning import losses
from unlearning.losses import IGNORE

# One sequence of 4 positions over a vocabulary of 3. Position t predicts token t+1.
# Prompt = tokens 0-1 (labels IGNORE), answer = tokens 2-3; the logits at positions 1 and 2 score them.
LOGITS = torch.tensor([[[9.0, 9.0, 9.0],  # position 0 predicts token 1: a prompt token, masked
                        [0.0, math.log(3.0), 0.0],  # predicts answer token 1 -> p = 3/5
                        [math.log(2.0), 0.0, math.log(2.0)],  # predicts answer token 2 -> p = 2/5
                        [5.0, 1.0, 2.0]]])  # the last position predicts nothing
LABELS = torch.tensor([[IGNORE, IGNORE, 1, 2]])
P1, P2 = 3 / 5, 2 / 5


def test_answer_nll_masks_the_prompt():
    expected = -(math.log(P1) + math.log(P2)) / 2
    assert losses.answer_nll(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_padding_and_prompt_are_both_ignored():
    # The same answer, right-padded by two positions whose logits would change any unmasked mean.
    padded_logits = torch.cat([LOGITS, torch.tensor([[[0.0, 50.0, 0.0], [50.0, 0.0, 0.0]]])], dim=1)
    padded_labels = torch.tensor([[IGNORE, IGNORE, 1, 2, IGNORE, IGNORE]])
    for fn in (losses.answer_nll, losses.answer_token_prob, losses.answer_log_prob_sum):
        assert fn(padded_logits, padded_labels).item() == pytest.approx(fn(LOGITS, LABELS).item(), rel=1e-6)


def test_answer_token_prob_is_the_average_token_probability():
    assert losses.answer_token_prob(LOGITS, LABELS).item() == pytest.approx((P1 + P2) / 2, rel=1e-6)


def test_answer_log_prob_sum():
    assert losses.answer_log_prob_sum(LOGITS, LABELS).item() == pytest.approx(math.log(P1 * P2), rel=1e-6)


def test_a_batch_gives_one_value_per_sequence():
    logits = torch.cat([LOGITS, torch.zeros(1, 4, 3)])  # second row: uniform, every token p = 1/3
    labels = torch.tensor([[IGNORE, IGNORE, 1, 2], [IGNORE, 0, 1, 2]])
    values = losses.answer_token_prob(logits, labels)
    assert values.tolist() == pytest.approx([(P1 + P2) / 2, 1 / 3], rel=1e-6)


# FLAT: L = -g(p_e) + f*(g(p_f)) with (g, f*∘g) per divergence, written out by hand.
PE, PF = 0.3, 0.7
FLAT_CASES = {
    "kl": -PE + math.exp(PF - 1),
    "pearson": -PE + (PF * PF / 4 + PF),
    "js": -(math.log(2) - math.log(1 + math.exp(-PE))) + (PF + math.log(1 + math.exp(-PF)) - math.log(2)),
    "tv": -math.tanh(PE) / 2 + math.tanh(PF) / 2,
}


@pytest.mark.parametrize("name, expected", FLAT_CASES.items())
def test_flat_loss_equals_its_formula(name, expected):
    value = losses.flat_loss(torch.tensor([PE]), torch.tensor([PF]), name)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_flat_loss_is_the_batch_mean():
    p_e, p_f = torch.tensor([0.3, 0.1]), torch.tensor([0.7, 0.2])
    expected = ((-0.3 + math.exp(0.7 - 1)) + (-0.1 + math.exp(0.2 - 1))) / 2
    assert losses.flat_loss(p_e, p_f, "kl").item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(FLAT_CASES))
def test_flat_pushes_the_template_up_and_the_forget_answer_down(name):
    p_e, p_f = torch.tensor([0.3], requires_grad=True), torch.tensor([0.7], requires_grad=True)
    losses.flat_loss(p_e, p_f, name).backward()
    assert p_e.grad.item() < 0 < p_f.grad.item()  # descending the loss raises p_e and lowers p_f


def test_unknown_divergence_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: kl, pearson, js, tv"):
        losses.flat_loss(torch.tensor([0.5]), torch.tensor([0.5]), "hellinger")


def test_gradient_ascent_is_minus_the_mean_nll():
    assert losses.gradient_ascent_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_gradient_difference_adds_the_weighted_retain_nll():
    value = losses.gradient_difference_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]), retain_weight=2.0)
    assert value.item() == pytest.approx(-2.0 + 2.0 * 1.0)


def test_random_label_loss_descends_on_the_relabelled_and_the_retain_answers():
    assert losses.random_label_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0]), 0.5).item() == pytest.approx(3.0)


def test_npo_equals_its_formula():
    beta, log_model, log_ref = 0.1, torch.tensor([-3.0, -8.0]), torch.tensor([-4.0, -6.0])

    def one(lm, lr):
        return -(2 / beta) * math.log(1 / (1 + math.exp(beta * (lm - lr))))  # logsigmoid(-x) = log(1/(1+e^x))

    expected = (one(-3.0, -4.0) + one(-8.0, -6.0)) / 2
    assert losses.npo_loss(log_model, log_ref, beta).item() == pytest.approx(expected, rel=1e-6)


def test_npo_is_2_log_2_when_the_model_equals_the_reference():
    value = losses.npo_loss(torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    assert value.item() == pytest.approx((2 / 0.5) * math.log(2), rel=1e-6)


def test_the_losses_read_only_the_trailing_positions_that_positions_read_names():
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 7)
    labels = torch.full((2, 10), IGNORE)
    labels[0, 4:8] = torch.tensor([1, 2, 3, 4])  # prompts of 4 and 6 tokens, then padding
    labels[1, 6:10] = torch.tensor([5, 6, 0, 1])
    n = losses.positions_read(labels)
    assert n == 7  # from position 3, which predicts the first answer token, to the end
    for loss in (losses.answer_nll, losses.answer_log_prob_sum, losses.answer_token_prob):
        assert torch.allclose(loss(logits[:, -n:], labels[:, -n:]), loss(logits, labels))
    assert losses.positions_read(torch.full((2, 10), IGNORE)) == 10
