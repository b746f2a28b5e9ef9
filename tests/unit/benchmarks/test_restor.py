"""RESTOR's data and scores (pure); the suite end to end: tests/e2e/benchmarks/test_restor.py."""

from __future__ import annotations

import pytest

from benchmarks.restor import Answers, Fact, RestorData, load_restor, restor_scores

DATA = RestorData("t", corrupt=(Fact("Capital of France?", "Paris.", "Paris", "Lyon.", "Lyon"),
                                Fact("Capital of Italy?", "Rome.", "Rome", "Milan.", "Milan"),
                                Fact("Capital of Spain?", "Madrid.", "Madrid", "Seville.", "Seville")),
                  untouched=(Fact("Capital of Japan?", "Tokyo.", "Tokyo", "Osaka.", "Osaka"),
                             Fact("Capital of Peru?", "Lima.", "Lima", "Cusco.", "Cusco")))
CLEAN = Answers(["It is Paris.", "It is Rome.", "I am not sure."], ["Tokyo.", "Lima."])
CORRUPTED = Answers(["It is Lyon.", "It is Milan.", "It is Seville."], ["Tokyo.", "Cusco."])


def test_the_scores_count_only_facts_the_clean_model_knew_and_the_corruption_overwrote():
    # Spain: the clean model did not know it, so it is not scored; France and Italy are.
    method = Answers(["Paris, of course.", "Milan, I think."], ["Tokyo.", "I forget."])
    method = Answers(method.corrupt + ["Madrid."], method.untouched)
    scores = restor_scores(DATA, CLEAN, CORRUPTED, method)
    assert scores == {"recovery_rate": 0.5, "corruption_forgotten": 0.5, "utility": 0.5,
                      "n_overwritten": 2, "n_untouched_known": 2}
    assert restor_scores(DATA, CLEAN, CORRUPTED, CORRUPTED)["recovery_rate"] == 0.0
    assert restor_scores(DATA, CLEAN, CORRUPTED, CLEAN)["corruption_forgotten"] == 1.0
    # an answer that names neither (a refusal) has forgotten the corruption without recovering
    silent = restor_scores(DATA, CLEAN, CORRUPTED, Answers(["No idea."] * 3, ["No idea."] * 2))
    assert (silent["recovery_rate"], silent["corruption_forgotten"], silent["utility"]) == (0.0, 1.0, 0.0)


def test_the_policy_forbids_the_wrong_answers_and_keeps_the_untouched_questions():
    target = DATA.policy().targets[0]
    assert [qa.answer for qa in target.qa] == ["Lyon.", "Milan.", "Seville."]
    assert list(target.keep) == ["Capital of Japan?", "Capital of Peru?"]


def test_the_shipped_facts_are_well_formed(tmp_path):
    data = load_restor()
    assert len(data.corrupt) == len(data.untouched) == 20
    for fact in data.corrupt + data.untouched:  # each key is in its own answer and not in the other
        assert fact.key in fact.answer and fact.wrong_key in fact.wrong_answer
        assert fact.key.lower() not in fact.wrong_answer.lower() and fact.wrong_key.lower() not in fact.answer.lower()
    assert len(load_restor(limit=3).corrupt) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("corrupt:\n  - [a question, an answer]\n")
    with pytest.raises(ValueError, match=r"corrupt\.0: expected \[question, answer, key, wrong answer, wrong key\]"):
        load_restor(bad)
