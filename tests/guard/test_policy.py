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
