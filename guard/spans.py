"""Forbidden spans from a target's forget data: what, exactly, the answer must not say.

For a flagged prompt, the target's forget items (QA answers, passages) nearest to the prompt are
retrieved, and spans are extracted from them: names and other capitalised spans, numbers and
dates, formulas ("E = mc2"), and rare content words. Rarity is a word's Zipf frequency in `wordfreq`'s general English
corpus (an IDF over billions of words, bundled offline). Spans are merged with the target's
explicit phrases, deduplicated and capped. Words of the prompt itself and common words are never
forbidden: a question about relativity must be answerable without the word "theory".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from wordfreq import zipf_frequency

from guard.folding import fold
from guard.policy import MAX_PATTERN_CHARS, MIN_FOLDED_PHRASE, Target

CAPITALISED = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:(?:of|the|de|van|von)\s+)*[A-Z][\w'’.-]*)*")
_NUMBER = re.compile(r"\b\d[\d,./-]*\d\b|\b\d{3,}\b")
# Formulas and codes: letters mixed with digits or joined by operators ("E = mc2", "H2O", "CO2").
_FORMULA = re.compile(r"\b[A-Za-z0-9]+(?:\s*[=+*/^]\s*[A-Za-z0-9²³]+)+|\b(?=\w*\d)(?=\w*[A-Za-z])\w{2,}\b")
_WORD = re.compile(r"\b[a-z][a-z'-]{4,}\b")
RARE_ZIPF = 3.5  # below: a rare content word ("photoelectric" 2.3); above: common ("theory" 4.9)
KEY_FACT_ZIPF = 5.0  # in the answer nearest the question, a word below this is a key fact ("miller" 4.5, not "worked" 5.2)
COMMON_ZIPF = 5.0  # a capitalised word this frequent ("The", "He", "In") is no name on its own


@dataclass(frozen=True)
class ForgetItem:
    text: str  # what is forbidden: a QA answer or a passage
    key: str  # what it is retrieved by: the question and answer, or the passage


def forget_items(target: Target) -> list[ForgetItem]:
    return [ForgetItem(qa.answer, f"{qa.question} {qa.answer}") for qa in target.qa] + [
        ForgetItem(doc, doc) for doc in target.documents
    ]


class SpanExtractor:
    def __init__(self, max_spans: int = 48):
        self.max_spans = max_spans

    def spans(self, texts: list[str], prompt: str = "", rare_zipf: float = RARE_ZIPF) -> list[str]:
        """Candidate spans of `texts`, names first, then numbers, then the rarest words (of Zipf
        frequency below `rare_zipf`); none made only of prompt words or common words."""
        asked = set()
        for word in re.findall(r"\w+", prompt):  # the prompt's words, singular and plural
            asked |= {fold(word), fold(word) + "s", fold(word).removesuffix("s")}
        found: dict[str, float] = {}
        for text in texts:
            for span in capitalised_spans(text):
                meaningful = [w for w in re.findall(r"\w+", span)
                              if fold(w) not in asked and zipf_frequency(w, "en") < COMMON_ZIPF]
                if meaningful:
                    found[span] = max(found.get(span, 0.0), 10.0 + len(meaningful))
            for match in [*_NUMBER.finditer(text), *_FORMULA.finditer(text)]:
                found[match.group()] = max(found.get(match.group(), 0.0), 8.0)
            for word in _WORD.findall(text):
                rarity = rare_zipf - zipf_frequency(word, "en")
                if rarity > 0 and fold(word) not in asked:
                    found[word] = max(found.get(word, 0.0), rarity)
        spans = [s for s in sorted(found, key=found.get, reverse=True)
                 if MIN_FOLDED_PHRASE <= len(fold(s)) <= MAX_PATTERN_CHARS and fold(s) not in asked]
        return spans[: self.max_spans]


def capitalised_spans(text: str) -> list[str]:
    """Names, titles and other capitalised runs of `text` ("Harry Potter", "Lord of the Rings"), a
    leading article dropped."""
    spans = (re.sub(r"^(?:The|A|An)\s+", "", m.group().strip(" .'’-")) for m in CAPITALISED.finditer(text))
    return [span for span in spans if span]


def nearest(item_vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """Indices of the k items most similar to the query (unit vectors: dot = cosine)."""
    if len(item_vectors) == 0:
        return []
    scores = item_vectors @ query
    return [int(i) for i in np.argsort(-scores)[:k]]
