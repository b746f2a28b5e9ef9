import pytest

from guard.policy import PolicyError, load_policy, parse_policy

GOOD = {"targets": [{"id": "hp", "description": "Harry Potter", "phrases": ["J.K. Rowling"],
                     "qa": [{"question": "Who wrote it?", "answer": "Rowling"}]}]}


def test_example_policy_loads():
    policy = load_policy("examples/harry-potter.yaml")
    assert policy.target_ids == ["harry-potter"]
    assert "J.K. Rowling" in policy.targets[0].phrases


def test_good_policy():
    assert parse_policy(GOOD).targets[0].qa[0].answer == "Rowling"


def test_empty_file_is_an_empty_policy():
    assert parse_policy(None).targets == ()


@pytest.mark.parametrize(
    "target, field",
    [
        ({"id": "Bad Id", "description": "x"}, "targets.0.id"),
        ({"id": "ok", "description": ""}, "targets.0.description"),
        ({"id": "ok", "description": "x", "phrases": ["ok phrase", "Ro"]}, "targets.0.phrases"),
        ({"id": "ok", "description": "x", "qa": [{"question": "q"}]}, "targets.0.qa.0.answer"),
        ({"id": "ok", "description": "x", "colour": "red"}, "targets.0.colour"),
        ({"description": "x"}, "targets.0.id"),
    ],
)
def test_bad_fields_are_named(target, field):
    with pytest.raises(PolicyError) as err:
        parse_policy({"targets": [target]}, source="p.yaml")
    assert str(err.value).startswith("p.yaml: ")
    assert field in str(err.value)


def _phrases(n: int, tag: str = "") -> list[str]:
    return [f"Name{tag} {i}" for i in range(n)]


@pytest.mark.parametrize("target, field, limit", [
    ({"phrases": _phrases(5001)}, "targets.0.phrases", "1024"),
    ({"phrases": ["x" * 129]}, "targets.0.phrases", "128"),
    ({"documents": ["word " * 4001]}, "targets.0.documents.0", "20000"),
    ({"qa": [{"question": "q", "answer": "a"}] * 2001}, "targets.0.qa", "2000"),
])
def test_what_the_guard_cannot_enforce_is_refused_naming_the_field_and_the_limit(target, field, limit):
    with pytest.raises(PolicyError) as err:
        parse_policy({"targets": [{"id": "big", "description": "x", **target}]})
    assert f"{field}: " in str(err.value) and limit in str(err.value)


def test_a_policy_holds_no_more_phrases_than_one_request_can_carry():
    targets = [{"id": f"t{k}", "description": "x", "phrases": _phrases(1000, str(k))} for k in range(3)]
    assert len(parse_policy({"targets": targets}).targets) == 3  # 3000 phrases: fine
    targets.append({"id": "t3", "description": "x", "phrases": _phrases(100, "3")})
    with pytest.raises(PolicyError, match="phrases: the targets hold 3100 distinct phrases in all; at most 3072"):
        parse_policy({"targets": targets})


def test_duplicate_ids():
    with pytest.raises(PolicyError, match="duplicate target id 'a'"):
        parse_policy({"targets": [{"id": "a", "description": "x"}, {"id": "a", "description": "y"}]})


def test_unknown_top_level_key():
    with pytest.raises(PolicyError, match="tragets"):
        parse_policy({"tragets": []})


def test_file_errors(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("targets: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(broken)
