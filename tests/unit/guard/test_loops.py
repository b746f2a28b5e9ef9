import pytest

from guard.folding import fold
from guard.loops import looping_start
from guard.matcher import Matcher
from guard.spec import compile_patterns
from tests.conftest import HP_PHRASES


def folded(*tokens: str) -> list[str]:
    return [fold(t) for t in tokens]


@pytest.mark.parametrize("tokens, start", [
    (("J", ".", "J", "."), "j"),  # "J.J." : a third "J" would be a loop
    (("Sir", " Sir"), "sir"),  # spelt with and without its space: the same letters
    (("-", "Lem", "on", "-", "Lem", "on", "-"), "lem"),  # a third copy begun: the token that goes on with it
    ((" Sir", " Sir", " John", ",", " Sir", " Sir", " John", ","), "sir"),  # a unit of four tokens, twice
])
def test_two_copies_in_a_row_ban_the_third(tokens, start):
    assert looping_start(folded(*tokens)) == start


@pytest.mark.parametrize("tokens", [
    ("The", " books", " were", " written"),  # no repeat
    ("\n", "\n", "\n", "\n"),  # runs of new lines or punctuation are no loop
    ("-", "-", "-"),
    ("Sir",),  # one copy
    ("a", " Sir", " b", " Sir"),  # not in a row
])
def test_what_is_no_loop(tokens):
    assert looping_start(folded(*tokens)) is None


def test_only_restricted_answers_are_held_to_it(token_index, tokenizer):
    ids = tokenizer.encode("Sir Sir", add_special_tokens=False)
    restricted = Matcher(compile_patterns(HP_PHRASES), 5.0, token_index)
    assert set(restricted.loop_bans(ids)) >= set(tokenizer.encode(" Sir", add_special_tokens=False))
    assert Matcher(compile_patterns(HP_PHRASES), 0.0, token_index).loop_bans(ids) == []  # the safety net: none
