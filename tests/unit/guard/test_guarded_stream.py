"""The guarded-text state machine, table-driven and synchronous: what is released, when it rewinds, where it cuts."""

from dataclasses import dataclass

import pytest

from guard.guarded_stream import CONTENT_FILTER, GuardedStream
from guard.leaks import CombinedDetector, LeakDetector
from tests.conftest import HP_PHRASES

STRICT = LeakDetector(HP_PHRASES)
NET = LeakDetector(HP_PHRASES, strict=False)


@dataclass
class Transcript:
    answer: str  # everything released, in order
    finish: str | None
    rewinds: int
    resumes: list[tuple[int, tuple[int, ...]]]  # per attempt after the first: (tokens resumed from, bans there)
    releases: list[str]  # what each unit released


def play(attempts: list[list[str]], detector=STRICT, max_rewinds: int = 4, tokens: bool = True,
         max_tokens: int | None = None) -> Transcript:
    """Feed each attempt's units (token k of attempt a has id 1000 * a + k) until the machine finishes."""
    machine = GuardedStream(detector, max_rewinds, max_tokens)
    answer, releases, resumes = "", [], []
    for a, units in enumerate(attempts):
        if a:
            resumes.append((len(machine.resume_ids), machine.resume_bans))
        for k, text in enumerate(units):
            last = k == len(units) - 1
            step = machine.feed(text, [1000 * a + k] if tokens else None, "stop" if last else None)
            answer += step.release
            releases.append(step.release)
            if step.action == "finish":
                return Transcript(answer, step.finish_reason, machine.rewinds, resumes, releases)
            if step.action == "rewind":
                break
    raise AssertionError("the attempts ran out before the machine finished")


NEAR_MISS = ["The", " author", " is", " J", ".K", ".", " Row", "ley", "."]


@pytest.mark.parametrize("attempts, kwargs, answer, finish, rewinds, resumes", [
    # innocent text is the producer's own, with its finish reason
    ([["The", " capital", " is", " Paris", "."]], {}, "The capital is Paris.", "stop", 0, []),
    # a near-miss rewinds to before the token that began it, banning that token there
    ([NEAR_MISS, [" an", " unknown", " writer", "."]], {}, "The author is an unknown writer.", "stop", 1,
     [(3, (3,))]),
    # rewinds used up: cut on the token boundary before the violation
    ([NEAR_MISS], {"max_rewinds": 0}, "The author is", CONTENT_FILTER, 0, []),
    # a second rewind at the same position bans both tokens that began the name there
    ([NEAR_MISS, [" J", ".K", ".", "L", "."], [" someone", "."]], {}, "The author is someone.", "stop", 2,
     [(3, (3,)), (3, (3, 1000))]),
    # an open partial match at the end counts: the name was on its way
    ([["His", " enemy", " is", " Vold"], [" unknown", "."]], {}, "His enemy is unknown.", "stop", 1, [(3, (3,))]),
    # no room left to resume: cut
    ([NEAR_MISS], {"max_tokens": 3}, "The author is", CONTENT_FILTER, 0, []),
    # without token ids (an upstream's text): never a rewind, cut just before the violation
    ([["The author is J", ".K", ". Row", "ling", "."]], {"tokens": False}, "The author is ", CONTENT_FILTER, 0, []),
    # nothing to guard: released as it comes
    ([NEAR_MISS], {"detector": None}, "The author is J.K. Rowley.", "stop", 0, []),
    # the safety net lets common words pass that the strict rules would rewind
    ([["A", " hermit", " was", " rolling", " a", " Ron", "do", "."]], {"detector": NET},
     "A hermit was rolling a Rondo.", "stop", 0, []),
    ([["A", " hermit", " crab", "."], [" crab", "."]], {}, "A crab.", "stop", 1, [(1, (1,))]),
    # ... and still rewinds the near-misses of a name
    ([["By", " J", ".K", ".", " Row", "land", "."], [" someone", "."]], {"detector": NET}, "By someone.", "stop", 1,
     [(1, (1,))]),
    ([["Lord", " Volder", "mort", "."], [" Nobody", "."]], {"detector": NET}, "Lord Nobody.", "stop", 1,
     [(1, (1,))]),
])
def test_what_is_released(attempts, kwargs, answer, finish, rewinds, resumes):
    transcript = play(attempts, **kwargs)
    assert (transcript.answer, transcript.finish, transcript.rewinds, transcript.resumes) == (
        answer, finish, rewinds, resumes)


def test_text_is_released_only_once_decided_and_never_taken_back():
    transcript = play([NEAR_MISS, [" an", " unknown", " writer", "."]])
    assert all("J" not in r for r in transcript.releases)
    assert transcript.releases[:4] == ["", "The", " author", " is"]  # a word goes once the next token ends it


def test_an_undecided_partial_match_is_held_back_on_unit_boundaries():
    machine = GuardedStream(STRICT)
    assert machine.feed("By ", None).release == "By "  # the space ended the word
    assert machine.feed("Ro", None).release == ""  # "Ro" could become "Rowling": held back
    assert machine.feed("w", None).release == ""
    step = machine.feed("ling", None)
    assert step.finish_reason == CONTENT_FILTER and step.release == "" and machine.text == "By "


def test_the_end_of_a_producer_without_a_finish_reason_is_judged_as_final():
    machine = GuardedStream(NET, max_rewinds=0)
    machine.feed("His enemy is", [1])
    assert machine.feed(" Voldermort", [2]).action == "continue"  # the word being written is not judged yet
    step = machine.end()
    assert step.finish_reason == CONTENT_FILTER and machine.text == "His enemy is"
    innocent = GuardedStream(STRICT)
    innocent.feed("Paris is", [1])
    assert innocent.end().finish_reason == "stop"


def test_the_next_attempt_spec_carries_the_replay_and_the_bans():
    from guard.spec import GuardSpec, compile_patterns

    machine = GuardedStream(STRICT, max_rewinds=2)
    steps = [machine.feed(text, [k]) for k, text in enumerate(NEAR_MISS[:5])]  # "The author is J.K"
    assert [s.action for s in steps] == ["continue"] * 4 + ["rewind"]
    spec = machine.attempt_spec(GuardSpec(compile_patterns(HP_PHRASES)))
    assert (spec.replay_tokens, spec.resume_bans) == (3, (3,))
    assert spec.avoid == ("jkrowling",)  # no spelling of it may begin again
    assert machine.decoded_tokens == 5 and machine.token_ids == [0, 1, 2]


def test_several_detectors_read_as_one():
    both = CombinedDetector([LeakDetector(["Albert Einstein"]), NET])
    assert [v.forbidden for v in both.violations("Einstein met Hermione.")] == ["einstein", "hermione"]
    assert both.scan("Einstein met Herm", final=False).undecided_from == len("Einstein met ")


@pytest.mark.parametrize("detector", [STRICT, None])
def test_a_stop_string_ends_the_answer_before_it_and_counts_the_units_that_wrote_it(detector):
    machine = GuardedStream(detector, stop=["END", "\n\n"])
    steps = [machine.feed(text, [k, k + 10] if k == 3 else [k]) for k, text in enumerate(["The", " capital", " E", "ND!"])]
    assert "E" not in steps[2].release  # " E" could begin "END": held back
    assert (steps[3].release, steps[3].finish_reason) == (" ", "stop")
    assert "".join(s.release for s in steps) == machine.text == "The capital "
    assert machine.token_ids == [0, 1, 2, 3]  # " E" and "ND" wrote it; "!" never belonged to the answer


def test_released_text_holds_back_only_what_could_begin_a_stop_string():
    machine = GuardedStream(None, stop=["###"])
    assert machine.feed("Paris is", [1]).release == "Paris is"
    assert machine.feed(" #", [2]).release == ""  # on unit boundaries: the whole unit waits
    assert machine.feed("#", [3]).release == ""
    assert machine.feed("1", [4]).release == " ##1"
    assert machine.feed(".", [5], "length").finish_reason == "length"


def test_a_stop_string_split_across_a_rewind_still_stops():
    """Accepted text ending in "EN", a rewind, and a next attempt beginning with "D": one "END"."""
    machine = GuardedStream(STRICT, max_rewinds=2, stop=["END"])
    for k, text in enumerate(["Done", " EN", "D", " Row", "ley"]):
        step = machine.feed(text, [k])
        if step.action != "continue":
            break
    assert step.finish_reason == "stop" and machine.text == "Done "


def test_the_stop_string_seam_after_a_rewind():
    machine = GuardedStream(STRICT, max_rewinds=2, stop=["END"])
    actions = [machine.feed(text, [k]).action for k, text in enumerate(["By", " EN", " Row", "ley"])]
    assert actions[-1] == "rewind" and machine.text == "By EN"  # the near-miss rewound; " EN" stays held
    step = machine.feed("D", [9])  # the next attempt's first token completes "END" across the seam
    assert step.finish_reason == "stop" and machine.text == "By " and machine.token_ids == [0, 1, 9]


class _Counting:
    """A detector that counts the characters it is asked to judge."""

    def __init__(self, detector):
        self.detector, self.patterns, self.judged = detector, detector.patterns, 0

    def scan(self, text, final, begin=0):
        self.judged += len(text) - begin
        return self.detector.scan(text, final, begin)


@pytest.mark.parametrize("detector", [STRICT, NET], ids=["strict", "safety-net"])
def test_one_unbroken_word_costs_work_in_proportion_to_its_length(detector):
    """An upstream that streams one endless word must not make the filter rescan it at every piece:
    the work stays within a few times the word's length (rescanning, it was length squared / 8)."""
    for length in (4000, 16000):
        counting = _Counting(detector)
        machine = GuardedStream(counting)
        released = "".join(machine.feed("a" * 4).release for _ in range(length // 4))
        assert len(released) > length - 2 * detector.decided_length  # released as it comes, not held to the end
        released += machine.end().release
        assert released == "a" * length
        assert counting.judged < 3 * length


@pytest.mark.parametrize("word", ["Rowling" + "x" * 300, "R\u043ewling" + "x" * 300, "Weasley" + "s" * 300])
def test_a_long_word_that_begins_with_a_name_is_still_cut(word):
    machine = GuardedStream(NET)
    released, step = "", None
    for i in range(0, len(word), 3):
        step = machine.feed(word[i:i + 3])
        released += step.release
        if step.action == "finish":
            break
    assert released == "" and step.finish_reason == CONTENT_FILTER
