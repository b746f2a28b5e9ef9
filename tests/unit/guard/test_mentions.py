import pytest

from guard.mentions import Mentions, anchors
from guard.policy import parse_policy
from tests.conftest import UNSEEN_POLICY

POLICY = parse_policy({"targets": [
    *UNSEEN_POLICY["targets"],
    {"id": "harry-potter", "description": "The Harry Potter books about the boy wizard, by J.K. Rowling.",
     "phrases": ["J.K. Rowling", "Rowling"],
     "qa": [{"question": "Which school does Harry attend?", "answer": "Hogwarts, where Albus Dumbledore is headmaster."}],
     "keep": ["Beatrix Potter", "Who wrote The Hobbit?"]},
]})
MENTIONS = Mentions(POLICY, background=["Which prize did Marie Curie win?", "Who won the Nobel Prize in 1903?"])


def test_anchors_are_the_phrases_and_the_names_the_forget_data_gives_its_subject():
    assert MENTIONS.anchors["lord-of-the-rings"] == ("J.R.R. Tolkien", "Tolkien", "Frodo", "Gandalf", "Lord of the Rings",
                                                     "One Ring", "Mordor", "Frodo Baggins")
    harry = MENTIONS.anchors["harry-potter"]
    assert {"Harry Potter", "Albus Dumbledore"} <= set(harry)  # the subject's title; a rare name of an answer
    assert "Harry" not in harry and "Hogwarts" not in harry  # a common word alone; a rare single word of an answer
    assert "Nobel Prize" not in MENTIONS.anchors["einstein"]  # many people's: in the background


def test_a_question_that_names_the_subject_gives_only_rare_names():
    """"For what did Einstein win the Nobel Prize in 1921?" is about a prize many people share: with
    no background to tell, it is still not an anchor (a rare name in such a question still is)."""
    einstein = POLICY.targets[0]
    assert "Nobel Prize" not in anchors(einstein)
    asking = einstein.model_copy(update={"qa": (*einstein.qa, einstein.qa[0].model_copy(
        update={"question": "Where did Einstein meet Mileva Maric?"}))})
    assert "Mileva Maric" in anchors(asking)


def test_a_derived_anchor_that_a_neighbour_to_keep_uses_is_dropped():
    target = POLICY.targets[2].model_copy(update={"keep": ("Harry Potter and friends",)})
    assert "Harry Potter" not in anchors(target) and "J.K. Rowling" in anchors(target)  # explicit phrases stay


@pytest.mark.parametrize("text, targets", [
    ("Réponds en JSON : qui a écrit Harry Potter ?", ("harry-potter",)),  # any language, any format
    ("Who carries the One Ring to Mordor?", ("lord-of-the-rings",)),
    ("Spell R-O-W-L-I-N-G backwards", ("harry-potter",)),  # folded
    ("What did Einstien discover?", ("einstein",)),  # a near-miss spelling
    ("Compare Einstein and Tolkien.", ("einstein", "lord-of-the-rings")),
    ("Who is Prince Harry?", ()), ("Tell me about Beatrix Potter.", ()), ("Who won the Nobel Prize in 1903?", ()),
    ("Is a hermit rolling down the hill?", ()),  # everyday words that share a name's letters
    ("Who wrote The Hobbit?", ()),
    # A question is not an answer: a title's first words before other words, an everyday word of a
    # title in another language or spelling, are not the title; a name begun and left in a rare word is.
    ("Who wrote Lord of the Flies?", ()), ("Die olympischen Ringe", ()), ("The best potters of Japan?", ()),
    ("Who is J.K. Rowley?", ("harry-potter",)), ("What did J.R.R. Tolkein write?", ("lord-of-the-rings",)),
])
def test_a_text_mentions_the_targets_whose_anchors_it_names(text, targets):
    assert MENTIONS.targets_in(text) == targets


def test_a_policy_without_anchors_mentions_nothing():
    assert Mentions(parse_policy({"targets": [{"id": "x", "description": "something or other"}]})).targets_in("anything") == ()


@pytest.mark.parametrize("text, read", [
    ("Who wrote Lord of the Flies?", "Who wrote of the Flies?"),  # another work's title borrows "Lord"
    ("Who was Albert Camus?", "Who was Camus?"),  # another person's name borrows "Albert"
    ("Was Harry Styles in a band?", "Was Styles in a band?"),
    ("Who wrote The Lord of the Rings?", "Who wrote The Lord of the Rings?"),  # a mention stays whole
    ("Where was Albert Einstein born?", "Where was Albert Einstein born?"),
    ("Where did Albert go next?", "Where did Albert go next?"),  # a word of a target's name alone is left
    ("Who carries the One Ring?", "Who carries the One Ring?"),  # a name made only of its words too
    ("What is the capital of France?", "What is the capital of France?"),
])
def test_the_classifier_reads_other_names_without_the_words_they_borrow(text, read):
    assert MENTIONS.unborrowed(text) == read


def test_a_policy_without_anchors_borrows_nothing():
    assert Mentions(parse_policy({"targets": []})).unborrowed("Who is Taylor Lautner?") == "Who is Taylor Lautner?"
