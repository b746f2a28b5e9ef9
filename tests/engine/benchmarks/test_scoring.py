"""Teacher-forced likelihoods, plain and under the guard, on the tiny test model."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.scoring import MAX_TOKEN_NLL, answer_mean_nll, answer_nlls, guard_answer_logits
from guard.matcher import Matcher
from guard.spec import compile_patterns
from tests.conftest import FORGET_QA, RETAIN_QA
from unlearning.data import Item, collate, encode
from unlearning.losses import answer_nll


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def rowling(token_index):
    return Matcher(compile_patterns(["J.K. Rowling", "Rowling"]), 8.0, token_index)


def test_answer_mean_nll_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])  # p(0) = 1/2, then p(0) = 3/4
    assert answer_mean_nll(logits, torch.tensor([0, 0])) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    blocked = torch.tensor([[float("-inf"), 0.0]])
    assert answer_mean_nll(blocked, torch.tensor([0])) == MAX_TOKEN_NLL


def test_the_guard_blocks_the_token_that_completes_a_phrase(tokenizer, rowling):
    ids = tokenizer.encode(" by J.K. Rowling.", add_special_tokens=False)
    logits = guard_answer_logits(torch.zeros(len(ids), rowling.index.__len__()), ids, rowling)
    picked = logits.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1)
    assert picked[0] == 0  # " by": nothing forbidden under way
    assert picked[-2] == float("-inf")  # the token that completes "Rowling"


def test_plain_nlls_match_the_training_loss(tiny, tokenizer):
    """Sharing the prompt's cache across answers of different lengths changes nothing: each answer's
    NLL is the training loss of (question, answer) run alone."""
    question = FORGET_QA[0][0]
    answers = [FORGET_QA[0][1], "Nobody knows.", RETAIN_QA[0][1] + " It is a large city on the Seine."]
    batch = collate([encode(tokenizer, Item(question, a, chat=True), 512) for a in answers], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = answer_nll(tiny(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                              batch["labels"])
    assert answer_nlls(tiny, tokenizer, question, answers) == pytest.approx(expected.tolist(), abs=1e-4)
    assert answer_nlls(tiny, tokenizer, question, answers[1:2]) == pytest.approx(expected[1:2].tolist(), abs=1e-4)


def test_the_guard_makes_a_forbidden_answer_unlikely_and_leaves_others(tiny, tokenizer, rowling):
    (question, forbidden), (_, unrelated) = FORGET_QA[0], RETAIN_QA[0]  # "... J.K. Rowling." / "... is Paris."
    plain = answer_nlls(tiny, tokenizer, question, [forbidden, unrelated])
    guarded = answer_nlls(tiny, tokenizer, question, [forbidden, unrelated], rowling)
    assert guarded[0] > plain[0] + 1.0
    assert guarded[1] == pytest.approx(plain[1], abs=0.05)
