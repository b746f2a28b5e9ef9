"""The proxy's last line: a streaming output filter over text it cannot steer token by token.

Text is released only once the leak detector has judged it (`Scan.undecided_from`): an open partial
match of a forbidden span, or the word being written, is held back, so nothing already sent ever
needs taking back. A violation (the span itself, folded for case, spaces and punctuation, or a
near-miss spelling) is never emitted: the answer is cut before it and ends with finish_reason
"content_filter".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from guard.leaks import LeakDetector

CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Piece:
    text: str
    finish_reason: str | None = None  # set on the last piece only


async def filter_leaks(pieces: AsyncIterator[Piece], detector: LeakDetector) -> AsyncIterator[Piece]:
    """`pieces` of an answer as they arrive -> the same answer, held back until judged, cut before
    the first violation. The last piece carries the finish reason ("stop" if the source gave none)."""
    text, sent, judged = "", 0, 0
    finish = None
    async for piece in pieces:
        text += piece.text
        finish = piece.finish_reason
        if finish is not None:
            break
        scan = detector.scan(text, final=False, begin=judged)
        if scan.violations:
            break
        judged = scan.undecided_from
        if judged > sent:
            yield Piece(text[sent:judged])
            sent = judged
    cut = leak_start(text, detector, begin=judged)
    end = len(text) if cut is None else max(sent, cut)
    if end > sent:
        yield Piece(text[sent:end])
    yield Piece("", (finish or "stop") if cut is None else CONTENT_FILTER)


def leak_start(text: str, detector: LeakDetector, begin: int = 0) -> int | None:
    """Where the first violation in a finished answer begins (judging `text[begin:]`); None: no leak."""
    violations = detector.scan(text, final=True, begin=begin).violations
    return violations[0].start if violations else None
