"""Properties of the phrase rule (issue: names glued to the text around them), on every example
policy's phrases, through what the client gets: `guard serve`'s generation loop (its streamed chunks,
joined as the whole answer is) and the proxy's filter level (streamed events, and a whole reply).

1. A phrase glued to a title or a word, in camel case, in a hashtag, a handle, a URL, an e-mail
   address, a file or variable name, or with digits or underscores between its words never reaches
   the client.
2. Everyday words that hold a phrase's letters across a word boundary ("to Kyoto" for Tokyo, "arrow
   lingering" for Rowling) are released as they are.

Judged independently of the guard: the phrase's letters, lowercased, anywhere in the letters of what
was released (so digits, case and punctuation hide nothing)."""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from guard.leaks import LeakDetector
from guard.policy import load_policy
from guard.spec import GuardSpec, compile_patterns
from server.engine import DecodeParams, Delta
from server.serving.generate.generation import generate_guarded
from server.serving.relay.output_filter import filtered_events, judged_choice
from tests.unit.server.test_relay import events_of, job_of

POLICIES = ["examples/harry-potter.yaml", "examples/unseen-targets.yaml"]
PHRASES = {path: [p for t in load_policy(path).targets for p in t.phrases] for path in POLICIES}
CASES = [(path, phrase) for path, phrases in PHRASES.items() for phrase in phrases]
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TITLES = ["Sir", "Dr", "Mr", "Mrs", "Ms", "Prof", "Lord", "Lady", "Saint", "Team", "The", "Great", "Dear", "Young"]
SENTENCES = ["", "Tell me about ", "The answer is ", "He was known as ", "Follow ", "See "]
ENDINGS = ["", ".", ", and his work", " said it.", "!", " 1879", "'s legacy"]


def letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def words_of(phrase: str) -> list[str]:
    return [w for w in re.split(r"[\s.]+", phrase) if w]


def camel(words: list[str]) -> str:
    return "".join(w[:1].upper() + w[1:].lower() for w in words)


@st.composite
def glued(draw, form: str, phrase: str) -> str:
    """`phrase` written in `form`, inside a sentence."""
    words, title = words_of(phrase), draw(st.sampled_from(TITLES))
    digits = st.text("0123456789", min_size=1, max_size=4)
    lower = [w.lower() for w in words]
    if form == "title":
        joiner = draw(st.sampled_from(["", " "]))
        name = title + draw(st.sampled_from([camel(words), joiner.join(words), phrase]))
    elif form == "camel":
        name = draw(st.sampled_from(["", title])) + camel(words) + draw(st.sampled_from(["", "Jr", "Fan", "Day"]))
    elif form == "hashtag":
        name = "#" + draw(st.sampled_from(["", title, "I"])) + draw(st.sampled_from([camel(words), "".join(lower)]))
    elif form == "handle":
        sep = draw(st.sampled_from(["", "_", ".", "-"]))
        name = "@" + draw(st.sampled_from(["", "the", "real", "official_"])) + sep.join(lower) + draw(st.one_of(st.just(""), digits))
    elif form == "url":
        sep = draw(st.sampled_from(["", "-", "_"]))
        name = (draw(st.sampled_from(["https://www.", "http://", "www.", "https://fans."])) + sep.join(lower)
                + draw(st.sampled_from([".com", ".org/about", ".net/wiki/index.html"])))
    elif form == "email":
        sep = draw(st.sampled_from(["", ".", "_"]))
        name = draw(st.sampled_from(["", "contact.", "dear"])) + sep.join(lower) + "@" + draw(st.sampled_from(["example.com", "mail.org"]))
    elif form == "identifier":
        name = draw(st.sampled_from([
            "_".join(lower) + ".py", "get" + camel(words) + "()", "_".join(w.upper() for w in words) + "_ID",
            camel(words) + "Service.java", "/home/" + "_".join(lower) + "/notes.txt", "$" + "_".join(lower)]))
    else:  # digits or underscores between its words
        parts = [draw(st.sampled_from(["_", "__"])) if draw(st.booleans()) else draw(digits) for _ in words[1:]]
        name = draw(st.sampled_from(["", title])) + "".join(w + p for w, p in zip(lower, [*parts, ""]))
    return draw(st.sampled_from(SENTENCES)) + name + draw(st.sampled_from(ENDINGS))


def pieces_of(draw, text: str) -> list[str]:
    """`text` cut into tokens at random points (the way an engine's tokens fall is not the guard's to choose)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=len(text) // 2)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if text[a:b]]


@lru_cache(maxsize=None)
def detector(path: str, strict: bool) -> LeakDetector:
    return LeakDetector(PHRASES[path], strict=strict)


@lru_cache(maxsize=None)
def spec(path: str) -> GuardSpec:
    return GuardSpec(compile_patterns(PHRASES[path]))


class SameAnswerEngine:
    """Every attempt writes the same tokens: a model that would not rephrase."""

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    async def stream(self, prompt_ids, params, spec, request_id):
        for i, text in enumerate(self.pieces[: params.max_tokens]):
            yield Delta([10_000 + i], text, "stop" if i == len(self.pieces) - 1 else None)


def served(path: str, pieces: list[str]) -> str:
    """What `guard serve`'s generation loop releases of an answer about the target (streamed; the whole
    answer is these chunks joined)."""
    async def collect():
        return [c.text async for c in generate_guarded(SameAnswerEngine(pieces), [1, 2], DecodeParams(max_tokens=200),
                                                       "r", detector(path, True), spec(path), 4)]
    return "".join(asyncio.run(collect()))


def filtered(path: str, pieces: list[str], strict: bool) -> tuple[str, str]:
    """What the proxy's filter level releases: streamed (the events' text) and whole (a reply's)."""
    async def source():
        for event in events_of(pieces):
            yield event

    async def collect():
        return [e async for e in filtered_events(job_of(detector(path, strict)), source())]
    streamed = "".join(c["delta"].get("content") or "" for e in asyncio.run(collect()) for c in e["choices"])
    whole, _ = judged_choice("chat", detector(path, strict),
                             {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                              "finish_reason": "stop"}, None)
    return streamed, whole["message"]["content"] or ""


FORMS = ["title", "camel", "hashtag", "handle", "url", "email", "identifier", "digits"]


@pytest.mark.parametrize("form", FORMS)
@EXAMPLES
@given(data=st.data())
def test_a_glued_phrase_never_reaches_the_client(form, data):
    path, phrase = data.draw(st.sampled_from(CASES))
    text = data.draw(glued(form, phrase))
    assert letters(phrase) in letters(text)  # the example does hold the phrase
    pieces = pieces_of(data.draw, text)
    released = {"serve, streamed and whole": served(path, pieces)}
    for strict in (True, False):
        released[f"filter streamed, strict={strict}"], released[f"filter whole, strict={strict}"] = filtered(path, pieces, strict)
    for where, text_out in released.items():
        assert letters(phrase) not in letters(text_out), (where, text, text_out)


@lru_cache(maxsize=1)
def everyday_words() -> tuple[str, ...]:
    from wordfreq import top_n_list

    return tuple(w for w in top_n_list("en", 30_000) if w.isascii() and w.isalpha() and len(w) >= 2)


@lru_cache(maxsize=None)
def straddles(phrase: str) -> tuple[tuple[str, str], ...]:
    """Pairs of everyday words, the first ending with the phrase's first letters, the second beginning
    with the rest, at least one of them longer than its part ("to" "kyoto")."""
    name, words = letters(phrase), everyday_words()
    pairs = []
    for k in range(1, len(name)):
        lefts = [w for w in words if w.endswith(name[:k])][:20]
        rights = [w for w in words if w.startswith(name[k:])][:20]
        pairs += [(a, b) for a in lefts for b in rights if (a, b) != (name[:k], name[k:])]
    return tuple(pairs)


def far_from_every_name(word: str) -> bool:
    """Independent of the guard's rules: the word does not begin with a name's first four letters and is
    not spelled like one (so that it is innocent on its own; "row" may begin "Rowling")."""
    names = [w.lower() for phrases in PHRASES.values() for p in phrases for w in words_of(p)]
    return all(not (len(word) >= 4 and word[:4] == n[:4]) and fuzz.ratio(word, n) < 70 for n in names)


STRADDLED = [(path, phrase) for path, phrase in CASES if straddles(phrase)]


@EXAMPLES
@given(data=st.data())
def test_everyday_words_that_hold_a_phrases_letters_across_a_space_are_released(data):
    path, phrase = data.draw(st.sampled_from(STRADDLED))
    first, second = data.draw(st.sampled_from(straddles(phrase)))
    assume(far_from_every_name(first) and far_from_every_name(second))
    text = data.draw(st.sampled_from(SENTENCES)) + f"{first} {second}" + data.draw(st.sampled_from(ENDINGS[:3]))
    pieces = pieces_of(data.draw, text)
    assert served(path, pieces) == text
    for strict in (True, False):
        assert filtered(path, pieces, strict) == (text, text)


def test_the_straddling_examples_exist():
    assert len(STRADDLED) >= 5 and ("to", "kyoto") in straddles("Tokyo")
