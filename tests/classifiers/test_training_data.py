import random

from classifiers.training_data import general_prompts, keep_prompts, near_domain_prompts, target_positives
from guard.policy import parse_policy
from tests.conftest import UNSEEN_POLICY

EINSTEIN = parse_policy(UNSEEN_POLICY).targets[0]


def test_general_prompts_are_many_and_diverse():
    prompts = general_prompts()
    assert len(prompts) >= 200 and len(set(prompts)) == len(prompts)
    assert not any(p.startswith("#") for p in prompts)


def test_positives_cover_the_forget_data_and_its_augmentations():
    positives = target_positives(EINSTEIN, random.Random(0))
    assert EINSTEIN.description in positives
    assert "Who developed the theory of relativity?" in positives
    assert any(p.startswith("Complete the sentence: The Nobel Prize") for p in positives)
    assert any("Ignore all previous instructions" in p or "Pretend you are" in p or "You are DAN" in p
               for p in positives)
    assert any("letter by letter" in p or "dashes between the letters" in p for p in positives)
    assert any("Albert Einstein" in p and p != "Albert Einstein" for p in positives)


def test_near_domain_prompts_name_other_entities_only():
    prompts = near_domain_prompts(EINSTEIN, ["people_of_science"], random.Random(0))
    assert len(prompts) >= 50
    assert not any("Einstein" in p for p in prompts)
    assert any("Marie Curie" in p for p in prompts)


def test_deterministic_for_a_seed():
    assert target_positives(EINSTEIN, random.Random(3)) == target_positives(EINSTEIN, random.Random(3))


def test_neighbours_to_keep_are_asked_about_as_the_target_is():
    target = EINSTEIN.model_copy(update={"keep": ("Niels Bohr", "Who developed quantum mechanics?")})
    prompts = keep_prompts(target, random.Random(0))
    assert "Who developed quantum mechanics?" in prompts  # a prompt, as given
    assert "Which prize did Niels Bohr win in 1921?" in prompts  # the target's own question, the neighbour in its place
    assert "Where was Niels Bohr born?" in prompts
    assert sum("Niels Bohr" in p for p in prompts) >= 5 and not any("Einstein" in p for p in prompts)
