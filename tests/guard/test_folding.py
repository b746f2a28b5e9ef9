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


def test_fold_piece_word_starts_and_origins():
    piece = fold_piece(" J.K. Row")
    assert piece.folded == "jkrow"
    assert piece.word_starts == {0, 1, 2}  # J, K and Row each follow a separator
    assert piece.leads_with_separator and not piece.ends_with_separator
    assert [" J.K. Row"[i] for i in piece.origins] == list("JKRow")


def test_fold_piece_of_a_bare_token():
    piece = fold_piece("ling.")
    assert piece.word_starts == frozenset() and not piece.leads_with_separator and piece.ends_with_separator
