import random

from classifiers.training_data import (general_prompts, keep_prompts, near_domain_prompts, neighbour_prompts, own_words,
                                      target_positives)
from guard.policy import parse_policy
from tests.conftest import UNSEEN_POLICY

EINSTEIN, TOLKIEN = parse_policy(UNSEEN_POLICY).targets


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
    prompts = near_domain_prompts(own_words(EINSTEIN), ["people_of_science"], random.Random(0))
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


def test_no_prompt_about_one_target_is_a_negative_for_another():
    curie = EINSTEIN.model_copy(update={"id": "curie", "description": "Marie Curie, who discovered radium.",
                                        "phrases": ("Marie Curie",)})
    taken = own_words(EINSTEIN) | own_words(curie)
    assert not any("Curie" in p for p in near_domain_prompts(taken, ["people_of_science"], random.Random(0)))
    assert any("Curie" in p for p in near_domain_prompts(own_words(EINSTEIN), ["people_of_science"], random.Random(0)))


def test_neighbours_are_other_entities_asked_as_the_target_is_and_prompts_in_its_forms():
    near_domain = near_domain_prompts(own_words(TOLKIEN), ["books"], random.Random(0))
    prompts = neighbour_prompts(TOLKIEN, own_words(TOLKIEN), ["books"], near_domain, random.Random(0))
    swapped = [p for p in prompts if p.startswith("Who wrote ") and p.endswith("?") and p not in near_domain]
    assert swapped and "Who wrote The Lord of the Rings?" not in prompts  # its own question, about another book
    assert not any(word in p for p in prompts for word in ("Tolkien", "Lord of the Rings", "Frodo", "Gandalf"))
    assert any(p.startswith("Complete the sentence: ") for p in prompts)
    assert any("JSON" in p for p in prompts) and any("Ignore all previous instructions" in p or "You are DAN" in p
                                                      or "Pretend you are" in p for p in prompts)
