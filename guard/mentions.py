"""Which targets a conversation names: detection by entity, with no classifier threshold involved.

A topic classifier can miss a conversation about a target ("Qui a écrit Harry Potter ?", a JSON
request, a follow-up) and flag one about its neighbours; a name cannot be mistaken that way. A
conversation that mentions one of a target's *anchors* is about that target, outright. Anchors:
- its explicit phrases (names, aliases), always;
- the names and titles its own forget data uses for its subject: capitalised spans of its
  description, and of the forget questions and example prompts that do not name it already
  ("Harry Potter", "The Lord of the Rings", "Mordor"), a single word only when rare
  (Zipf < SUBJECT_WORD_ZIPF: "Hogwarts", not "Harry");
- the names its forget answers, passages and the questions that name it give, when they hold a
  rare word ("Frodo Baggins", "Lord Voldemort"; not "Nobel Prize", which many people share).
A derived anchor that the target's neighbours also use is dropped: one found in its `keep` list or
in the classifier's negatives (general and near-domain prompts) that are not about the target.

Mentions are found as the safety net finds names in answers (guard.leaks, lenient rules): folded,
so "R-o-w-l-i-n-g" and "ROWLING" count, and near-miss spellings ("Rowlings", "Voldermort") too,
never an everyday word that shares a name's letters. But a question is not an answer: a title's
first words followed by other words name another work ("Lord of the Flies"), not an evasion.

The same names tell the classifier which words of a conversation are not what they seem: a name
that borrows a word of a target's ("Albert Camus") reaches it without that word (`unborrowed`).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from wordfreq import zipf_frequency

from guard.leaks import LeakDetector, Violation
from guard.name_words import phrase_owners
from guard.policy import MIN_FOLDED_PHRASE, Policy, Target
from guard.spans import CAPITALISED, capitalised_spans

SUBJECT_WORD_ZIPF = 3.6  # a one-word name of the subject rarer than this is an anchor ("Hogwarts" 3.2; not "Iceland" 3.8)
FACT_WORD_ZIPF = 3.5  # a name in a forget answer is an anchor when one of its words is rarer ("Baggins" 2.4)
COMMON_ZIPF = 5.0  # a span made only of words this frequent is no name ("The", "In", "English")
ARTICLES = {"the", "a", "an"}
_WORD = re.compile(r"[^\W_]+")
EVERYDAY_ZIPF = 4.0  # a word this frequent is an everyday word, even in a name ("rings" 4.3, "Potter" 4.1; "Einstein" 3.7)


class Mentions:
    def __init__(self, policy: Policy, background: Iterable[str] = ()):
        """`background`: texts about none of the targets (the classifier's negatives)."""
        background = [_words(text) for text in background]
        pairs = [(t.id, anchor) for t in policy.targets for anchor in anchors(t, background)]
        self.anchors = {tid: tuple(a for t, a in pairs if t == tid) for tid in policy.target_ids}
        self._owners = phrase_owners(pairs)
        self._detector = LeakDetector([a for _, a in pairs], strict=False) if pairs else None
        self._name_words = {w.lower() for _, a in pairs for w in _WORD.findall(a)  # "albert", "rings"
                            if w[:1].isupper() and len(w) >= 3} - ARTICLES

    def targets_in(self, text: str) -> tuple[str, ...]:
        """The targets whose anchors `text` mentions, sorted."""
        if self._detector is None:
            return ()
        found = [v for v in self._detector.violations(text) if _names(v, text)]
        return tuple(sorted({t for v in found for t in self._owners.get(v.forbidden, ())}))

    def unborrowed(self, text: str) -> str:
        """`text` with the words that names of other entities borrow from the targets' names taken
        out of those names, for the classifier, which reads words, not names: "Taylor" in "Taylor
        Lautner" is no sign of Taylor Swift, nor "Lord" in "Lord of the Flies" one of The Lord of the
        Rings ("Who is Lautner?", "Who wrote of the Flies?"). A name made only of the targets' words,
        or that mentions one, is left whole ("Luke", "Dark Lord", "Frodo Baggins's ring")."""
        def unborrow(run: re.Match) -> str:
            name = run.group()
            capitalised = [w for w in _WORD.findall(name) if w[:1].isupper() and w.lower() not in ARTICLES]
            borrowed = {w for w in capitalised if w.lower() in self._name_words}
            if not borrowed or len(borrowed) == len(set(capitalised)) or self.targets_in(name):
                return name
            return re.sub(rf"\b(?:{'|'.join(map(re.escape, borrowed))})\b\s*", "", name)

        return CAPITALISED.sub(unborrow, text) if self._name_words else text


def _names(violation: Violation, text: str) -> bool:
    """Whether what the safety net would call a leak in an answer names the anchor in a question. An
    answer that begins a name and swerves is evading; a question that shares a title's first words
    is about another work ("Lord of the Flies"), and a word like an everyday word of a title is that
    word, or one of another language ("Ringe"). So: a whole anchor; a misspelling of a word of one
    that is no everyday word ("Voldermort", not "Potters"); an anchor begun and left in a word that is
    none either ("J.K. Rowley", "Dumbledor"; not "Lord of the")."""
    if violation.kind == "complete":
        return True
    if violation.kind == "similar":
        return zipf_frequency(violation.forbidden, "en") < EVERYDAY_ZIPF
    last = [w for w in _WORD.finditer(text) if w.start() < violation.end][-1]
    return zipf_frequency(last.group().lower(), "en") < EVERYDAY_ZIPF


def anchors(target: Target, background: Sequence[str] = ()) -> list[str]:
    """`background`: texts about none of the targets, as `_words` gives them."""
    own = set(_words(" ".join([target.description, *target.phrases])).split())
    unrelated = [text for text in background if not (set(text.split()) & own)]  # about another subject
    neighbours = [_words(text) for text in target.keep] + unrelated
    # A question that names the subject already is about something of the subject's: its other
    # names are facts ("the Nobel Prize" in "For what did Einstein win the Nobel Prize?").
    named = [f" {_words(p)} " for p in target.phrases]
    asked = [*(qa.question for qa in target.qa), *target.examples]
    naming = [text for text in asked if any(n in f" {_words(text)} " for n in named)]
    subject = [target.description, *(text for text in asked if text not in naming)]
    facts = [*(qa.answer for qa in target.qa), *target.documents, *naming]
    derived = [s for text in subject for s in capitalised_spans(text) if _names_the_subject(s)]
    derived += [s for text in facts for s in capitalised_spans(text) if _names_a_fact(s)]
    derived = [s for s in derived if not any(f" {_words(s)} " in f" {n} " for n in neighbours)]
    return [a for a in dict.fromkeys([*target.phrases, *derived]) if len(_words(a).replace(" ", "")) >= MIN_FOLDED_PHRASE]


def _names_the_subject(span: str) -> bool:
    frequencies = [zipf_frequency(w, "en") for w in _words(span).split()]
    if len(frequencies) == 1:
        return frequencies[0] < SUBJECT_WORD_ZIPF
    return min(frequencies, default=COMMON_ZIPF) < COMMON_ZIPF


def _names_a_fact(span: str) -> bool:
    frequencies = [zipf_frequency(w, "en") for w in _words(span).split()]
    return len(frequencies) > 1 and min(frequencies) < FACT_WORD_ZIPF


def _words(text: str) -> str:
    """Lowercase words of `text` joined by single spaces (for whole-word containment)."""
    return " ".join(_WORD.findall(text.lower()))
