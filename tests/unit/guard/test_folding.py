import pytest

from guard.folding import fold, fold_piece


@pytest.mark.parametrize(
    "text, folded",
    [
        ("J.K. Rowling", "jkrowling"),
        ("JK Rowling", "jkrowling"),
        ("j. k. rowling's", "jkrowlings"),
        ("R-o-w-l-i-n-g", "rowling"),
        ("ROWLING", "rowling"),
        ("Hermíone", "hermione"),
        ("  ...  ", ""),
        ("Route 66", "route66"),
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded


@pytest.mark.parametrize("disguised", [
    "J.K. R\u043ewling",  # Cyrillic o
    "J.K. R\u03bfwling",  # Greek omicron
    "J.K. Rowl\u0456ng",  # Cyrillic i
    "\uff2a.\uff2b. \uff32\uff4f\uff57\uff4c\uff49\uff4e\uff47",  # fullwidth
    "\U0001d409.\U0001d40a. \U0001d411\U0001d428\U0001d430\U0001d425\U0001d422\U0001d427\U0001d420",  # bold
    "J.K. R0wl1ng",  # digits for letters
    "J.K. Row\u200bling",  # a zero-width space
    "J.K. R\u00f3wling",  # an accent
])
def test_every_disguise_of_a_letter_folds_to_it(disguised):
    assert fold(disguised) == "jkrowling"


@pytest.mark.parametrize("text, folded", [
    ("H3rm10n3", "hermione"), ("R0n W34sl3y", "ronweasley"), ("V0ld3m0rt", "voldemort"),
    ("H2O", "h2o"), ("E = mc2", "emc2"), ("Route 66", "route66"),  # 2, 6, 8, 9 stay digits
    ("1879", "i8t9"),  # numbers fold as their digits do: a year still matches itself
    ("30\u00b0C \u00d7 2", "eoc2"),  # symbols that look like letters stay separators
    ("V@ldemort", "vldemort"), ("Herm!one", "hermone"),  # as ASCII symbols do
])
def test_digits_fold_to_the_letters_they_stand_for_and_symbols_stay_separators(text, folded):
    assert fold(text) == folded


def test_folding_is_idempotent_and_a_letter_never_vanishes():
    for text in ["H\u0435rm\u0456\u043en\u0435 1879", "\u041f\u0440\u0438\u0432\u0435\u0442", "\u00e6\u00df\u01c6"]:
        assert fold(fold(text)) == fold(text)
        assert len(fold(text)) >= sum(ch.isalnum() for ch in text)


def test_fold_piece_word_starts_and_origins():
    piece = fold_piece(" J.K. Row")
    assert piece.folded == "jkrow"
    assert piece.word_starts == {0, 1, 2}  # J, K and Row each follow a separator
    assert piece.leads_with_separator and not piece.ends_with_separator
    assert [" J.K. Row"[i] for i in piece.origins] == list("JKRow")


def test_fold_piece_of_a_bare_token():
    piece = fold_piece("ling.")
    assert piece.word_starts == frozenset() and not piece.leads_with_separator and piece.ends_with_separator
