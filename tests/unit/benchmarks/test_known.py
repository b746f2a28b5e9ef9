import pytest
import yaml

from benchmarks.known import KNOWN_ENTITIES, load_known
from guard.folding import fold


@pytest.fixture(scope="module")
def data():
    return load_known()


def test_suite_shape(data):
    assert data.name == "known-hp"
    assert data.train == ()
    assert len(data.forget) == 20
    assert len(data.retain) == 30
    assert [s.id for s in data.subjects] == ["harry-potter"]
    assert {qa.subject for qa in data.forget} == {"harry-potter"}
    assert {qa.subject for qa in data.retain} == {"classic-books", "world-capitals", "company-founders"}


def test_forget_phrases_name_the_series(data):
    phrases = set(data.subjects[0].phrases)
    assert {"J.K. Rowling", "Rowling", "Hogwarts", "Hermione Granger", "Ron Weasley", "Voldemort"} <= phrases


def test_item_invariants(data):
    for qa in data.forget + data.retain:
        key = fold(qa.key)
        assert key and key in fold(qa.answer) and key in fold(qa.paraphrased_answer), qa
        assert len(qa.perturbed_answers) == 3 and len(set(qa.perturbed_answers)) == 3, qa
        for wrong in qa.perturbed_answers:
            assert wrong not in (qa.answer, qa.paraphrased_answer)
            assert key not in fold(wrong), (qa.key, wrong)


def test_questions_are_unique(data):
    questions = [qa.question for qa in data.forget + data.retain]
    assert len(questions) == len(set(questions))


def test_retain_text_never_says_a_forget_phrase(data):
    phrases = [fold(p) for p in data.subjects[0].phrases]
    for qa in data.retain:
        for text in (qa.question, qa.answer, qa.paraphrased_answer, *qa.perturbed_answers):
            assert not any(p in fold(text) for p in phrases), text


def test_policy_is_valid(data):
    policy = data.policy()
    assert policy.target_ids == ["harry-potter"]
    assert len(policy.targets[0].qa) == 20


def test_missing_field_names_the_item(tmp_path):
    suite = yaml.safe_load(KNOWN_ENTITIES.read_text())
    del suite["retain"]["world-capitals"][2]["paraphrased_answer"]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(ValueError, match=r"retain\.world-capitals\.2: missing field 'paraphrased_answer'"):
        load_known(path)


def test_forget_items_need_a_declared_subject(tmp_path):
    suite = yaml.safe_load(KNOWN_ENTITIES.read_text())
    suite["forget"]["star-wars"] = suite["forget"].pop("harry-potter")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(ValueError, match="star-wars"):
        load_known(path)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_known(tmp_path / "missing.yaml")
