import re
from collections import Counter

import pytest

from benchmarks.synthetic import MAX_QUESTIONS_PER_PERSON, PERTURBED_PER_ITEM, generate
from guard.folding import fold

SEEDS = range(5)


@pytest.fixture(scope="module")
def data():
    return generate(n_people=20, questions_per_person=12, forget_people=4, seed=7)


def test_same_arguments_give_identical_data():
    assert generate(12, 10, 3, seed=5) == generate(12, 10, 3, seed=5)


def test_different_seeds_give_different_people():
    names = [{s.name for s in generate(12, 5, 12, seed=seed).subjects} for seed in (1, 2)]
    assert names[0] != names[1]
    assert len(names[0] & names[1]) < 3


def test_split_sizes_and_name(data):
    assert data.name == "synthetic-20p-seed7"
    assert len(data.subjects) == 4
    assert len(data.forget) == 4 * 12
    assert len(data.retain) == 16 * 12
    assert data.train == data.forget + data.retain


def test_splits_are_by_person(data):
    forget_ids = {qa.subject for qa in data.forget}
    assert forget_ids == {s.id for s in data.subjects}
    assert not forget_ids & {qa.subject for qa in data.retain}
    assert set(Counter(qa.subject for qa in data.train).values()) == {12}


def test_names_and_ids_are_unique_and_well_formed(data):
    people = {qa.subject for qa in data.train}
    assert len(people) == 20
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", pid) for pid in people)
    for subject in data.subjects:
        last = subject.name.split()[-1]
        assert subject.phrases == (subject.name, last)
        assert subject.description.startswith(f"{subject.name}, a fictional ")
        assert subject.description.count(".") == 1  # one sentence


def test_questions_are_not_repeated_for_a_person(data):
    asked = Counter((qa.subject, qa.question) for qa in data.train)
    assert max(asked.values()) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_item_invariants(seed):
    for qa in generate(20, MAX_QUESTIONS_PER_PERSON, 5, seed).train:
        assert qa.key and qa.key in qa.answer and qa.key in qa.paraphrased_answer
        assert qa.answer != qa.paraphrased_answer
        assert len(qa.perturbed_answers) == PERTURBED_PER_ITEM and 3 <= PERTURBED_PER_ITEM <= 5
        assert len(set(qa.perturbed_answers)) == PERTURBED_PER_ITEM
        for wrong in qa.perturbed_answers:
            assert wrong not in (qa.answer, qa.paraphrased_answer)
            assert fold(qa.key) not in fold(wrong)


def test_perturbed_answers_keep_the_paraphrase_shape(data):
    for qa in data.train:
        # every perturbed answer differs from the paraphrase only where the value is
        prefix = len(_common_prefix([qa.paraphrased_answer, *qa.perturbed_answers]))
        suffix = len(_common_prefix([s[::-1] for s in [qa.paraphrased_answer, *qa.perturbed_answers]]))
        assert prefix + suffix >= len(qa.paraphrased_answer) - len(qa.key) - 20, qa


@pytest.mark.parametrize("seed", SEEDS)
def test_forget_surnames_never_appear_in_retain_facts(seed):
    data = generate(24, 14, 10, seed)
    surnames = [s.name.split()[-1] for s in data.subjects]
    texts = " ".join(f"{qa.question} {qa.answer} {qa.paraphrased_answer}" for qa in data.retain)
    for surname in surnames:
        assert not re.search(rf"\b{surname}\b", texts, re.IGNORECASE), surname


def test_policy_has_one_target_per_forget_person(data):
    policy = data.policy()
    assert policy.target_ids == [s.id for s in data.subjects]
    for target in policy.targets:
        assert len(target.qa) == 12
        assert target.phrases[0] in target.qa[0].answer or target.phrases[0] in target.qa[0].question


def test_no_forget_people_gives_an_empty_policy():
    data = generate(3, 2, 0, seed=1)
    assert data.forget == () and data.subjects == () and len(data.retain) == 6
    assert data.policy().targets == ()


@pytest.mark.parametrize("args, message", [
    ((0, 5, 0, 1), "n_people"),
    ((5, 0, 1, 1), "questions_per_person"),
    ((5, MAX_QUESTIONS_PER_PERSON + 1, 1, 1), "questions_per_person"),
    ((5, 5, 6, 1), "forget_people"),
    ((5, 5, -1, 1), "forget_people"),
])
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        generate(*args)


def _common_prefix(texts: list[str]) -> str:
    first = min(texts)
    last = max(texts)
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    return first[:i]


def test_no_two_names_share_a_beginning():
    """The guard and the classifier must tell people apart as they would unrelated real people."""
    data = generate(24, 3, 4, seed=3)
    subjects = {q.subject for q in data.forget + data.retain}
    firsts = [s.split("-")[0][:3] for s in subjects]
    lasts = [s.split("-")[1][:3] for s in subjects]
    assert len(set(firsts)) == len(firsts) and len(set(lasts)) == len(lasts), subjects
    with pytest.raises(ValueError, match="n_people"):
        generate(25, 3, 4, seed=3)
