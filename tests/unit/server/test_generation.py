"""The guarded generation loop against a scripted engine: how the state machine's decisions reach the
engine (aborted attempts, the resubmitted prompt, the next attempt's spec). The decisions themselves
are tested in tests/unit/guard/test_guarded_stream.py."""

import asyncio
from dataclasses import dataclass, field


from guard.leaks import LeakDetector
from guard.spec import GuardSpec, compile_patterns
from server.engine import DecodeParams, Delta
from server.serving.generate.generation import generate_guarded
from tests.conftest import HP_PHRASES

DETECTOR = LeakDetector(HP_PHRASES)
SPEC = GuardSpec(compile_patterns(HP_PHRASES))
PROMPT = [100, 101]


@dataclass
class ScriptedEngine:
    """Each call to stream() plays the next script: a list of token texts (token id = position)."""

    scripts: list[list[str]]
    calls: list[tuple[list[int], DecodeParams, GuardSpec | None]] = field(default_factory=list)

    async def stream(self, prompt_ids, params, spec, request_id):
        self.calls.append((prompt_ids, params, spec))
        script = self.scripts[len(self.calls) - 1]
        for i, text in enumerate(script):
            last = i == len(script) - 1
            yield Delta([1000 * len(self.calls) + i], text, "stop" if last else None)


def run(engine, max_rewinds=4, detector=DETECTOR, spec=SPEC):
    async def collect():
        return [c async for c in generate_guarded(engine, PROMPT, DecodeParams(max_tokens=50), "r", detector,
                                                  spec, max_rewinds)]
    return asyncio.run(collect())


NEAR_MISS = ["The", " author", " is", " J", ".K", ".", " Row", "ley", "."]


def test_a_near_miss_is_rewound_and_rephrased():
    engine = ScriptedEngine([NEAR_MISS, [" an", " unknown", " writer", "."]])
    chunks = run(engine)
    assert "".join(c.text for c in chunks) == "The author is an unknown writer."
    assert chunks[-1].finish_reason == "stop" and chunks[-1].rewinds == 1
    # the second attempt resumes after "The author is", bans " J" there and replays the accepted tokens
    prompt_ids, params, spec = engine.calls[1]
    assert prompt_ids == PROMPT + [1000, 1001, 1002]
    assert spec.replay_tokens == 3 and spec.resume_bans == (1003,)
    assert params.max_tokens == 47
    assert chunks[-1].completion_tokens == 7


def test_streamed_text_is_never_taken_back():
    engine = ScriptedEngine([NEAR_MISS, [" an", " unknown", " writer", "."]])
    chunks = run(engine)
    released = ""
    for chunk in chunks:
        released += chunk.text
        assert "J.K" not in released
    assert released == "The author is an unknown writer."


def test_rewinds_run_out_the_answer_is_cut_before_the_violation():
    engine = ScriptedEngine([NEAR_MISS])
    chunks = run(engine, max_rewinds=0)
    assert "".join(c.text for c in chunks) == "The author is"
    assert chunks[-1].finish_reason == "content_filter"


def test_repeated_rewinds_at_one_position_accumulate_bans():
    again = [" J", ".K", ".", "L", "."]  # resumes after "The author is": "J.K." again, then improvises
    engine = ScriptedEngine([NEAR_MISS, again, [" someone", "."]])
    chunks = run(engine)
    assert "".join(c.text for c in chunks) == "The author is someone."
    # the third attempt bans both tokens that began "J.K." at that position
    assert engine.calls[2][2].resume_bans == (1003, 2000)


def test_an_open_partial_match_at_the_end_counts():
    engine = ScriptedEngine([["His", " enemy", " is", " Vold"], [" unknown", "."]])
    chunks = run(engine)
    assert "".join(c.text for c in chunks) == "His enemy is unknown."


def test_unrestricted_requests_take_the_plain_path():
    engine = ScriptedEngine([NEAR_MISS])
    chunks = run(engine, detector=None, spec=None)
    assert "".join(c.text for c in chunks) == "The author is J.K. Rowley."
    assert engine.calls[0][2] is None  # no spec: no per-step work in the engine


def test_innocent_answers_pass_unchanged():
    engine = ScriptedEngine([["The", " capital", " of", " France", " is", " Paris", "."]])
    chunks = run(engine)
    assert "".join(c.text for c in chunks) == "The capital of France is Paris."
    assert len(engine.calls) == 1 and chunks[-1].rewinds == 0


def test_an_engine_that_ends_without_a_finish_reason_is_judged_to_the_end():
    @dataclass
    class Unfinished(ScriptedEngine):
        async def stream(self, prompt_ids, params, spec, request_id):
            self.calls.append((prompt_ids, params, spec))
            for i, text in enumerate(self.scripts[len(self.calls) - 1]):
                yield Delta([1000 * len(self.calls) + i], text, None)
    chunks = run(Unfinished([["His", " enemy", " is", " Voldermort"], [" unknown", "."]]))
    assert "".join(c.text for c in chunks) == "His enemy is unknown." and chunks[-1].rewinds == 1
