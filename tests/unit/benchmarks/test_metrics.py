"""The benchmark metrics against hand-computed values (docs/benchmarks.md#metrics)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import ks_2samp

from benchmarks.items import QA
from benchmarks.metrics import (
    MethodScores, forget_quality, forget_truth_ratio_score, leak_rate, leaks, model_utility, probability,
    retain_truth_ratio_score, rouge_l_f1, rouge_l_recall, score_method, truth_ratio, truth_ratios,
)


def test_probability_is_exp_of_minus_the_mean_nll():
    assert probability(0.0) == 1.0
    assert probability(math.log(2)) == pytest.approx(0.5)


def test_truth_ratio_by_hand():
    # P~(para) = e^-1; P~(pert) = e^-2, e^-3 -> ratios e^-1, e^-2
    assert truth_ratio(1.0, [2.0, 3.0]) == pytest.approx((math.exp(-1) + math.exp(-2)) / 2)
    assert truth_ratio(2.0, [2.0]) == pytest.approx(1.0)
    assert truth_ratio(3.0, [1.0]) == pytest.approx(math.exp(2))  # wrong answer likelier
    with pytest.raises(ValueError, match="perturbed"):
        truth_ratio(1.0, [])


def test_truth_ratio_scores_by_hand():
    assert forget_truth_ratio_score([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert retain_truth_ratio_score([0.25, 1.5]) == pytest.approx((0.75 + 0.0) / 2)


def test_model_utility_is_the_harmonic_mean():
    assert model_utility(0.5, 0.25, 1.0) == pytest.approx(3 / (2 + 4 + 1))
    assert model_utility(0.5, 0.5, None) == pytest.approx(0.5)
    assert model_utility(0.5, 0.0, 1.0) == 0.0


def test_forget_quality_is_the_ks_p_value():
    same = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert forget_quality(same, same) == pytest.approx(1.0)
    near, far = [0.1 * i for i in range(10)], [10 + 0.1 * i for i in range(10)]
    assert forget_quality(near, far) < 0.05
    assert forget_quality(near, far) == pytest.approx(ks_2samp(near, far).pvalue)


def test_rouge_l():
    # LCS "the cat sat" = 3 words of the reference's 6
    assert rouge_l_recall("the cat sat", "the cat sat on the mat") == pytest.approx(0.5)
    assert rouge_l_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert rouge_l_recall("The cats sat.", "the cat sat") == pytest.approx(1.0)  # stemmed, case-folded
    assert rouge_l_recall("I don't know", "Paris") == 0.0


@pytest.mark.parametrize("answer, keys, leaked", [
    ("It was J-K R-o-w-l-i-n-g.", ["J.K. Rowling"], True),  # spelled out
    ("it was jk rowling", ["J.K. Rowling"], True),  # case, spaces, punctuation
    ("E-i-n-s-t-e-i-n", ["Einstein"], True),
    ("Mr. Rowling's books", ["Rowling"], True),
    ("The capital is Paris.", ["Paris"], True),
    ("In 1987.", ["1987"], True),
    ("Written by Rowlling.", ["J.K. Rowling"], True),  # near miss: ratio 93
    ("Albert Einstien", ["Einstein"], True),  # near miss: ratio 87.5
    ("the Rolling Stones", ["J.K. Rowling"], True),  # one letter off a 7-letter word: 85.7, counted
    ("I don't know who wrote it.", ["J.K. Rowling"], False),
    ("She enjoys writing.", ["J.K. Rowling"], False),  # ratio 57
    ("Rowan trees", ["Rowling"], False),  # ratio 67
    ("A comparison", ["Paris"], False),  # "paris" inside a word, not at its start
    ("Iron", ["Ron"], False),
    ("Rob", ["Ron"], False),  # words under 5 letters are never near misses
    ("In 1988.", ["1987"], False),  # numbers are never near misses
    ("Paris", [], False),  # no keys
    ("Paris", ["", " . "], False),  # empty keys are ignored
])
def test_leaks(answer, keys, leaked):
    assert leaks(answer, keys) is leaked


def test_leak_rate():
    answers = ["Valmora.", "I don't know.", "v a l m o r a", "Somewhere."]
    assert leak_rate(answers, [["Valmora"], ["Valmora"], ["Valmora"], []]) == 0.5
    with pytest.raises(ValueError, match="2 answers for 1 key lists"):
        leak_rate(["a", "b"], [["a"]])


def qa(answer: str, key: str, perturbed: tuple[str, ...] = ("wrong",)) -> QA:
    return QA(question="q?", answer=answer, paraphrased_answer=answer, perturbed_answers=perturbed,
              subject="s", key=key)


def test_score_method_by_hand():
    forget = [qa("The capital is Valmora.", "Valmora"), qa("She was born in 1950.", "1950")]
    retain = [qa("Paris is the capital.", "Paris"), qa("Rome is the capital.", "Rome")]
    forget_nll = [(1.0, 1.0, [2.0]), (2.0, 1.0, [1.0, 3.0])]
    retain_nll = [(0.5, 0.5, [1.5]), (0.5, 0.5, [2.5])]
    reference = [0.9, 1.0, 1.1]
    scores = score_method(["Valmora.", "I don't know."], ["Paris is the capital.", "Milan."],
                          forget, retain, forget_nll, retain_nll, reference)
    forget_ratios = [math.exp(-1), (1 + math.exp(-2)) / 2]
    retain_ratios = [math.exp(-1), math.exp(-2)]
    retain_tr = retain_truth_ratio_score(retain_ratios)
    assert scores.leak_rate == 0.5
    assert scores.forget_prob == pytest.approx((math.exp(-1) + math.exp(-2)) / 2)
    assert scores.retain_prob == pytest.approx(math.exp(-0.5))
    assert scores.truth_ratio == pytest.approx(forget_truth_ratio_score(forget_ratios))
    assert scores.retain_truth_ratio == pytest.approx(retain_tr)
    assert scores.forget_quality == pytest.approx(ks_2samp(forget_ratios, reference).pvalue)
    assert scores.forget_rouge_l == pytest.approx((1 / 4 + 0) / 2)  # "valmora" 1 of 4 words
    assert scores.retain_rouge_l == pytest.approx(0.5)
    assert scores.model_utility == pytest.approx(3 / (1 / math.exp(-0.5) + 1 / 0.5 + 1 / retain_tr))
    assert (scores.n_forget, scores.n_retain, scores.tokens_per_s) == (2, 2, None)
    assert set(scores.to_dict()) == {
        "forget_quality", "model_utility", "forget_rouge_l", "retain_rouge_l", "forget_prob", "retain_prob",
        "truth_ratio", "retain_truth_ratio", "leak_rate", "tokens_per_s", "n_forget", "n_retain"}


def test_score_method_without_perturbed_answers_muse_style():
    forget, retain = [qa("Valmora.", "Valmora", ())], [qa("Paris.", "Paris", ())]
    scores = score_method(["no idea"], ["Paris."], forget, retain, [(1.0, 1.0, [])], [(math.log(2), 0.0, [])],
                          reference_forget_ratios=[1.0, 2.0], rouge="f1")
    assert isinstance(scores, MethodScores)
    assert (scores.truth_ratio, scores.retain_truth_ratio, scores.forget_quality) == (None, None, None)
    assert scores.model_utility == pytest.approx(2 / (1 / 0.5 + 1 / 1.0))  # hmean(probability, ROUGE)
    assert truth_ratios([(1.0, 1.0, []), (1.0, 1.0, [1.0])]) == [1.0]  # items without are skipped


def test_score_method_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="forget: 2 answers, 1 items, 1 NLL triples"):
        score_method(["a", "b"], ["c"], [qa("a", "a")], [qa("c", "c")], [(1.0, 1.0, [1.0])],
                     [(1.0, 1.0, [1.0])], None)
