"""The proxy's streaming output filter: hold-back, cut before a leak, never a leaked character out."""

import asyncio

import pytest

from guard.leaks import LeakDetector
from server.output_filter import CONTENT_FILTER, Piece, filter_leaks, leak_start
from tests.conftest import HP_PHRASES

DETECTOR = LeakDetector(HP_PHRASES)


def run(pieces: list[str], finish: str | None = "stop") -> list[Piece]:
    async def source():
        for i, text in enumerate(pieces):
            yield Piece(text, finish if i == len(pieces) - 1 else None)

    async def collect():
        return [p async for p in filter_leaks(source(), DETECTOR)]
    return asyncio.run(collect())


def text_of(out: list[Piece]) -> str:
    return "".join(p.text for p in out)


def test_innocent_text_passes_whole_with_its_finish_reason():
    out = run(["The capital", " of France", " is Paris", "."], "length")
    assert text_of(out) == "The capital of France is Paris."
    assert out[-1] == Piece("", "length") and all(p.finish_reason is None for p in out[:-1])


@pytest.mark.parametrize("pieces, kept", [
    (["The books are by J", ".K", ". Row", "ling", "."], "The books are by "),  # split across pieces
    (["The author is jk ", "ROWLING", " herself"], "The author is "),  # case and spacing folded
    (["Ask ", "J. K. Rowley", " about it"], "Ask "),  # a near-miss spelling
    (["Lord Volde", "rmort rises"], "Lord "),  # a near-miss of a forbidden name
])
def test_a_leak_is_cut_before_it_and_ends_with_content_filter(pieces, kept):
    out = run(pieces)
    assert text_of(out) == kept
    assert out[-1].finish_reason == CONTENT_FILTER
    assert leak_start("".join(pieces), DETECTOR) is not None


def test_nothing_undecided_is_released_early():
    """While "Row" could still become "Rowling" it is held back, so nothing sent needs taking back."""
    seen: list[Piece] = []
    released_when_asked: list[str] = []

    async def source():
        for text in ["By ", "Row", "ling"]:
            released_when_asked.append(text_of(seen))  # what the client had before this piece arrived
            yield Piece(text)
        yield Piece("", "stop")

    async def collect():
        async for piece in filter_leaks(source(), DETECTOR):
            seen.append(piece)
    asyncio.run(collect())
    assert released_when_asked == ["", "By ", "By "]  # "By " goes at once; "Row" is held back
    assert text_of(seen) == "By " and seen[-1].finish_reason == CONTENT_FILTER


def test_a_source_that_ends_without_a_finish_reason_still_finishes():
    out = run(["Paris is", " lovely"], finish=None)
    assert text_of(out) == "Paris is lovely" and out[-1].finish_reason == "stop"
