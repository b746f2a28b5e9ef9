import pytest

from guard.spec import GuardSpec, compile_patterns


def test_compile_patterns_merges_variants():
    assert compile_patterns(["J.K. Rowling", "JK Rowling", "j. k. rowling", "Rowling", "Ro"]) == ("jkrowling", "rowling")


def test_round_trip_through_extra_args():
    for spec in [GuardSpec(("jkrowling", "rowling"), 5.0, replay_tokens=3, resume_bans=(11, 12), leading_words=("jk", "ron"),
                           avoid=("hogwarts", "jkrowling"), embedded=("hermione", "weasley")),
                 GuardSpec(("jkrowling", "rowling"), 5.0, penalised=("rowling",)),
                 GuardSpec(("rowling",), 0.0, penalised=())]:
        assert GuardSpec.from_extra_args(spec.to_extra_args()) == spec
        xargs = spec.to_vllm_xargs()  # over HTTP: vllm_xargs values must be flat
        assert isinstance(xargs["guard"], str) and GuardSpec.from_extra_args(xargs) == spec


def test_unguarded_request_has_no_spec():
    assert GuardSpec.from_extra_args(None) is None
    assert GuardSpec.from_extra_args({"other": 1}) is None


@pytest.mark.parametrize(
    "raw, field",
    [
        ("x", "guard: not valid JSON"),
        ("[1]", "guard: must be an object"),
        (3, "guard: must be an object"),
        ('{"patterns": ["ab"]}', "guard.patterns"),
        ({"patterns": "rowling"}, "guard.patterns"),
        ({"patterns": ["J.K. Rowling"]}, "guard.patterns"),  # not folded
        ({"patterns": ["ab"]}, "guard.patterns"),  # too short
        ({"patterns": ["rowling"], "penalty": -1}, "guard.penalty"),
        ({"patterns": ["rowling"], "penalty": True}, "guard.penalty"),
        ({"patterns": ["rowling"], "replay_tokens": -2}, "guard.replay_tokens"),
        ({"patterns": ["rowling"], "resume_bans": [-1]}, "guard.resume_bans"),
        ({"patterns": ["rowling"], "resume_bans": [999]}, "guard.resume_bans"),
        ({"patterns": ["rowling"], "avoid": ["Hogwarts"]}, "guard.avoid"),  # not folded
        ({"patterns": ["rowling"], "embedded": ["Gandalf"]}, "guard.embedded"),  # not folded
        ({"patterns": ["rowling"], "avoid": ["x" * 129]}, "guard.avoid"),
        ({"patterns": ["rowling"], "penalised": ["hogwarts"]}, "guard.penalised"),  # not one of the patterns
        ({"patterns": ["rowling"], "colour": 1}, "unknown field"),
    ],
)
def test_invalid_specs_name_the_field(raw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        GuardSpec.from_extra_args({"guard": raw}, vocab_size=100)
