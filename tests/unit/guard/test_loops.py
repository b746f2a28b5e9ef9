import pytest

from guard.folding import fold, fold_piece
from guard.loops import looping_start, overused_words
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


def pieces(*tokens: str):
    return [fold_piece(t) for t in tokens]


@pytest.mark.parametrize("tokens, words", [
    (("Lem", "on", "-", "Cam", "el", "-", "Lem", "on", "-", "Lem", "on", "-"), {"lemon"}),  # 3 of the last 4 words
    (("Sir", " Sir", " John", ",", " Sir", " John", ","), {"sir"}),  # "John" twice: not yet
    (("The", " cat", " saw", " the", " dog", " in", " the", " park", "."), set()),  # function words are free
    (("A", " lemon", ",", " a", " pear", ",", " a", " plum", ",", " a", " fig", ",", " lemon"), set()),  # spread out
    (("Sir", " Sir", " Si"), set()),  # the word being written is not counted yet
])
def test_a_word_that_fills_the_last_words_is_overused(tokens, words):
    assert overused_words(pieces(*tokens)) == words


def test_only_restricted_answers_are_held_to_it(token_index, tokenizer):
    ids = tokenizer.encode("Sir Sir", add_special_tokens=False)
    restricted = Matcher(compile_patterns(HP_PHRASES), 5.0, token_index)
    assert set(restricted.loop_bans(ids, False)) >= set(tokenizer.encode(" Sir", add_special_tokens=False))
    ids = tokenizer.encode("Lemon-Camel-Lemon-Lemon-", add_special_tokens=False)
    assert set(tokenizer.encode(" Lemon", add_special_tokens=False)) <= set(restricted.loop_bans(ids, True))
    assert Matcher(compile_patterns(HP_PHRASES), 0.0, token_index).loop_bans(ids, True) == []  # the safety net: none
