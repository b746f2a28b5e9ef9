"""Finding forbidden text, and the near-misses of it, in generated text.

The token matcher stops a forbidden phrase from completing; what it cannot judge alone is text
that merely *approaches* one: "J.K. Rowley", "Voldermort", "Weasly". `LeakDetector` reads output
text and reports such violations with the character where they begin, so the guarded stream can
rewind to before them, and the benchmarks can count leaks with one definition.

Violations, in one of two rule sets:
- complete: a pattern matched at a word start (folded, so "R-o-w-l-i-n-g" counts). Both.
- broken:   a partial match left unfinished.
            strict (a conversation about the target): >= NEAR_MISS_DEPTH letters ("Rowl|ey", "Herm" as
            a nickname) or covering the whole leading word(s) of a multi-word phrase ("J.K." then
            "R.A.M."), judged as soon as it appears, even while still open: the engine blocks its
            completion, so the model can only go on with a near-miss or improvise.
            lenient (the safety net on every other answer): >= NEAR_MISS_DEPTH letters and at least
            LENIENT_FRACTION of the pattern ("J.K. Row|land", "Volde|rmort"), or a phrase's leading
            initials and a letter more ("J.R.R. T|.A.L."), judged once the word it ends in is finished,
            and not when it lies in one common word ("hermit", "weasel", "hogwash").
- similar:  a finished word of >= 4 letters within edit similarity FUZZY_RATIO of a forbidden word
            of >= 5 letters, including the parts of multi-word names ("Voldermort", "Granger").
            lenient: not when it is a common word ("rolling" is not "Rowling").
            strict: not when it is a common word that begins with another letter ("grid" is not
            "Hagrid"; "Snake" may be "Snape"); and a longer word, not a common one, part of which is
            within INSIDE_RATIO of a name's word of >= MIN_INSIDE_WORD letters ("aurilorqueliholim").
- inside:   a name glued into another word ("LandhielZephaquist", "#TeamGandalf"): a word of a phrase
            (>= MIN_FUZZY_WORD letters) found whole inside a word past its first letter, where no
            English word holds it ("rowling" is inside "growling", so not Rowling; "gandalf" is inside
            none). Counted as complete. Both.
A common word is one of Zipf frequency >= COMMON_ZIPF (guard.name_words) in wordfreq's English list: misspelt names sit
below it ("Voldermort" 1.5, "Hermoine" 1.6), everyday words above it ("rolling" 4.5, "hogwash" 2.4).

Scanning is incremental: text before `begin` was judged already, and the word being written is the
only text judged again as it grows. A word longer than a detector's `decided_length` is judged while
still being written: no pattern can still complete from its start, and no word that long is within
FUZZY_RATIO of a forbidden one (a ratio of 80 needs lengths within 1.5 times). So the work per
character of even an unbroken 64k-character word stays bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Protocol

from rapidfuzz import fuzz, process

from guard.folding import fold, fold_char, fold_piece
from guard.name_words import MIN_FUZZY_WORD, NEAR_MISS_DEPTH, embedded_words, is_common, leading_words, phrase_gaps
from guard.spec import compile_patterns

LENIENT_FRACTION = 0.6
FUZZY_RATIO = 80.0
INSIDE_RATIO = 85.0  # rapidfuzz's partial_ratio: the best-aligned part of a longer word
MIN_INSIDE_WORD = 6
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_WORD_CHAR = re.compile(r"[^\W_]")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


@dataclass(frozen=True)
class Violation:
    start: int  # index in the text where the offending span begins
    end: int
    kind: Literal["complete", "broken", "similar"]
    forbidden: str  # the folded pattern or word it matched


@dataclass(frozen=True)
class Scan:
    violations: list[Violation]
    undecided_from: int  # text before this index can be released: it cannot become a violation


class Detector(Protocol):
    """What the guarded stream reads text with: a LeakDetector, or several as one."""

    patterns: tuple[str, ...]

    def scan(self, text: str, final: bool, begin: int = 0) -> Scan: ...


class LeakDetector:
    def __init__(self, phrases: Iterable[str], fuzzy_phrases: Iterable[str] | None = None, *, strict: bool = True):
        """`fuzzy_phrases` (default: all phrases) are the ones whose words are also checked for
        near-miss spellings; rare common-looking words ("carries") are better matched exactly.
        `strict`: the rules for a conversation about the target; False: the safety net's."""
        phrases = list(phrases)
        fuzzy_phrases = phrases if fuzzy_phrases is None else list(fuzzy_phrases)
        self.strict = strict
        self.patterns = compile_patterns(phrases)
        self._prefixes = {p[:k] for p in self.patterns for k in range(1, len(p) + 1)}
        self._pattern_set = set(self.patterns)
        self._first_letters = {p[0] for p in self.patterns}
        self._gaps = phrase_gaps(phrases, self._prefixes)
        self._leading_words = leading_words(phrases) if strict else frozenset()
        # Folded initials that lead a phrase ("jrr" of "J.R.R. Tolkien"): with a letter of the name after
        # them, the name is being written.
        self._initials = {lead for phrase in phrases if (lead := _leading_initials(phrase))}
        self.words = sorted(
            {fold(w) for phrase in fuzzy_phrases for w in phrase.split() if len(fold(w)) >= MIN_FUZZY_WORD}
        )
        # The words of multi-word names glued into another word ("LandhielZephaquist"); whole phrases are
        # the phrase rule's, wherever they begin.
        self.embedded = tuple(w for w in embedded_words(fuzzy_phrases) if w not in self._pattern_set)
        self._embedded_prefixes = {w[:k] for w in self.embedded for k in range(1, len(w))}
        self.decided_length = 1 + max([len(p) for p in self.patterns] + [math.ceil(1.5 * len(w)) for w in self.words],
                                      default=0)

    # -- scanning --------------------------------------------------------------------------
    def scan(self, text: str, final: bool, begin: int = 0) -> Scan:
        """Judge `text[begin:]` (text before `begin` was judged already).

        With final=False the text is still growing: the word being written and partial matches
        still open are not judged yet, and `undecided_from` says where they begin. With
        final=True the text is complete: an open partial match deep enough counts as broken.
        """
        piece = fold_piece(text[begin:])
        starts = set(piece.word_starts)
        if piece.folded and not piece.leads_with_separator and (begin == 0 or not fold_char(text[begin - 1])):
            starts.add(0)
        violations: list[Violation] = []
        undecided = self._phrases(text, begin, piece, starts, final, violations)
        undecided = min(undecided, self._embedded_in_words(text, begin, piece, starts, final, violations))
        undecided = min(undecided, self._similar_words(text, begin, final, violations))  # where nothing else was
        violations.sort(key=lambda v: v.start)
        return Scan(violations, undecided)

    def _phrases(self, text: str, begin: int, piece, starts: set[int], final: bool,
                 violations: list[Violation]) -> int:
        """Phrases wherever their letters begin: at a word start complete, broken (a near-miss) or still
        open; inside a word (glued: "SirIsaacNewton") complete only. Adds what it finds to `violations`;
        returns where the undecided text begins (its length: nowhere)."""
        folded, origins = piece.folded, piece.origins
        undecided = len(text)
        for j in range(len(folded)):
            if folded[j] not in self._first_letters:
                continue
            matched, last, respaced = self._walk(text, begin, piece, starts, j)
            if not matched:
                continue
            start, end = begin + origins[j], begin + origins[last] + 1
            open_at_end = last + 1 == len(folded) and not final
            if respaced and (j not in starts or not open_at_end and last + 1 < len(folded) and last + 1 not in starts):
                continue  # letters of ordinary words across a space ("to Kyoto"): only whole words re-spaced count
            if open_at_end and (respaced or j not in starts and len(self._completion(matched)) >= MIN_FUZZY_WORD):
                undecided = min(undecided, start)
            elif j not in starts:
                if matched in self._pattern_set and len(matched) >= MIN_FUZZY_WORD:
                    word = _word_around(text, start)
                    if not final and self._being_written(word, text):
                        undecided = min(undecided, word.start())
                    elif not is_common(word.group()):  # "growling" holds "rowling", "Weinstein" "einstein"
                        violations.append(Violation(start, end, "complete", matched))
            elif matched in self._pattern_set:
                violations.append(Violation(start, end, "complete", matched))
            elif self.strict and (len(matched) >= NEAR_MISS_DEPTH or self._covers_leading_words(matched)):
                # Broken, or still open but doomed: the engine blocks its completion, so whatever
                # comes next is a near-miss. Judged now, before the model improvises past it.
                violations.append(Violation(start, end, "broken", self._completion(matched)))
            elif not self.strict and (self._deep_enough(matched) or self._past_initials(matched)):
                word = _word_at(text, start)
                if not final and self._being_written(word, text):
                    undecided = min(undecided, start)  # the word it ends in is still being written
                elif word.end() < end or not is_common(word.group()):
                    violations.append(Violation(start, end, "broken", self._completion(matched)))
            elif open_at_end:
                undecided = min(undecided, start)
        return undecided

    def _walk(self, text: str, begin: int, piece, starts: set[int], j: int) -> tuple[str, int, bool]:
        """The longest pattern prefix spelled from folded position `j` (stopping at a complete pattern):
        (prefix, the folded position of its last letter, whether it crosses a word gap where its phrase
        has none). Digits between a phrase's words are skipped ("isaac2newton", "albert_1_einstein")."""
        folded, origins = piece.folded, piece.origins
        matched, last, respaced, k = "", j, False, j
        while k < len(folded):
            if matched + folded[k] in self._prefixes:
                respaced |= k in starts and k != j and len(matched) not in self._gaps[matched]
                matched, last, k = matched + folded[k], k, k + 1
                if matched in self._pattern_set:
                    break
            elif matched and len(matched) in self._gaps[matched] and text[begin + origins[k]].isdigit():
                k += 1
            else:
                break
        return matched, last, respaced

    def _embedded_in_words(self, text: str, begin: int, piece, starts: set[int], final: bool,
                           violations: list[Violation]) -> int:
        """The embedded words (a target's names glued into another word) inside words."""
        folded, origins = piece.folded, piece.origins
        undecided = len(text)
        for j in range(len(folded) if self.embedded else 0):
            if j in starts:
                continue  # a word start: the rules above judge what begins there
            depth = 0
            while (j + depth < len(folded) and (depth == 0 or j + depth not in starts)
                   and folded[j : j + depth + 1] in self._embedded_prefixes):
                depth += 1
            if j + depth < len(folded) and (j + depth not in starts) and folded[j : j + depth + 1] in self.embedded:
                start, end = begin + origins[j], begin + origins[j + depth] + 1
                violations.append(Violation(start, end, "complete", folded[j : j + depth + 1]))
            elif depth and j + depth == len(folded) and not final:
                undecided = min(undecided, begin + origins[j])  # a glued name may be under way
        return undecided

    def _similar_words(self, text: str, begin: int, final: bool, violations: list[Violation]) -> int:
        """Whole words that are a misspelling of a forbidden word, where nothing else was found."""
        undecided = len(text)
        for word in _WORD.finditer(text, begin):
            if word.start() == begin and begin and _WORD_CHAR.match(text[begin - 1]):
                continue  # the rest of a word judged before (a long one, judged while being written)
            if not final and self._being_written(word, text):
                undecided = min(undecided, word.start())
            elif any(v.start < word.end() and word.start() < v.end for v in violations):
                continue  # already reported as a (partial) match, or a name inside it
            elif (similar := self._similar_word(word.group())) is not None:
                violations.append(Violation(word.start(), word.end(), "similar", similar))
        return undecided

    def violations(self, text: str) -> list[Violation]:
        """Every leak in a finished text (the benchmarks' and tests' leak definition)."""
        return self.scan(text, final=True).violations

    def _being_written(self, word: re.Match, text: str) -> bool:
        """Whether `word`, at the end of a growing text, is still undecided (not yet too long to matter).
        A word folds to at least its length less an apostrophe (guard.folding)."""
        return word.end() == len(text) and len(word.group()) - 1 <= self.decided_length

    def _covers_leading_words(self, matched: str) -> bool:
        return any(matched[:k] in self._leading_words for k in range(2, len(matched) + 1))

    def _deep_enough(self, matched: str) -> bool:
        needed = math.ceil(LENIENT_FRACTION * len(self._completion(matched)))
        return len(matched) >= max(NEAR_MISS_DEPTH, needed)

    def _past_initials(self, matched: str) -> bool:
        return any(len(matched) > len(lead) and matched.startswith(lead) for lead in self._initials)

    def _completion(self, prefix: str) -> str:
        return next(p for p in self.patterns if p.startswith(prefix))

    def _similar_word(self, word: str) -> str | None:
        folded = fold(_POSSESSIVE.sub("", word))  # "Issac's" is as near to "Isaac" as "Issac"
        if len(folded) < 4 or not self.words:
            return None
        best = process.extractOne(folded, self.words, scorer=fuzz.ratio, score_cutoff=FUZZY_RATIO)
        if best is None and self.strict and not is_common(folded):  # a misspelt name glued into a word
            inside = [w for w in self.words if len(w) >= MIN_INSIDE_WORD and len(folded) >= len(w) + 2]
            best = process.extractOne(folded, inside, scorer=fuzz.partial_ratio, score_cutoff=INSIDE_RATIO)
            return None if best is None else best[0]
        if best is None or (is_common(folded) and (not self.strict or folded[0] != best[0][0])):
            return None  # an everyday word; strict: one that does not even begin as the name does ("grid", "Hagrid")
        return best[0]


class CombinedDetector:
    """Several detectors read as one: every violation any of them finds, held back where any is undecided."""

    def __init__(self, detectors: Iterable[LeakDetector]):
        self.detectors = tuple(detectors)
        self.patterns = tuple(sorted({p for d in self.detectors for p in d.patterns}))

    def scan(self, text: str, final: bool, begin: int = 0) -> Scan:
        scans = [d.scan(text, final, begin) for d in self.detectors]
        violations = sorted((v for s in scans for v in s.violations), key=lambda v: v.start)
        return Scan(violations, min((s.undecided_from for s in scans), default=len(text)))

    def violations(self, text: str) -> list[Violation]:
        return self.scan(text, final=True).violations


def _word_around(text: str, index: int) -> re.Match:
    """The word of `text` that `index` lies in."""
    start = index
    while start > 0 and _WORD_CHAR.match(text[start - 1]):
        start -= 1
    return _WORD.match(text, start)


def _word_at(text: str, index: int) -> re.Match:
    """The word of `text` that begins at `index` (a word start)."""
    return _WORD.match(text, index) or _WORD.search(text, index)


def _leading_initials(phrase: str) -> str | None:
    """"J.R.R. Tolkien" -> "jrr": the folded leading words of a phrase, when each is a single letter."""
    words = [fold(w) for w in re.split(r"[\s.]+", phrase) if fold(w)]
    lead = words[:-1]
    return "".join(lead) if lead and all(len(w) == 1 for w in lead) else None
