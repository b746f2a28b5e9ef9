"""`guard unlearn` stops on bad input before any model loads, with one line naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import FORGET_QA, write_jsonl


@pytest.fixture
def forget(tmp_path):
    return write_jsonl(tmp_path / "forget.jsonl", FORGET_QA)


def unlearn(capsys, *args: str) -> str:
    """Run `guard unlearn ARGS`, expect exit status 2, return its one-line message."""
    assert main(["unlearn", *args]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("guard unlearn: "), message
    return message


def test_unknown_method_and_divergence(capsys, forget, tmp_path):
    out = tmp_path / "v"
    assert "--method: unknown 'fat'; known: flat, ga, graddiff, npo" in unlearn(capsys, "--method", "fat", "--forget", str(forget),
                                                       "--out", str(out))
    assert "--divergence: unknown 'kld'" in unlearn(
        capsys, "--method", "flat", "--divergence", "kld", "--forget", str(forget), "--out", str(out))
    assert "--divergence" in unlearn(capsys, "--method", "ga", "--divergence", "kl", "--forget", str(forget),
                                     "--out", str(out))
    assert not out.exists()


def test_messages_quote_the_users_words_as_typed(capsys, forget, tmp_path):
    """Option names get their dashes; what the user typed does not (`grad_diff` stays `grad_diff`)."""
    out = str(tmp_path / "v")
    assert "--method: unknown 'grad_diff'" in unlearn(capsys, "--method", "grad_diff", "--forget", str(forget),
                                                      "--out", out)
    message = unlearn(capsys, "--method", "ga", "--forget", str(forget), "--out", out, "--batch-size", "0",
                      "--max-length", "0")
    assert "--batch-size: " in message and "; --max-length: " in message, message


def test_bad_numbers_and_missing_retain(capsys, forget, tmp_path):
    out = str(tmp_path / "v")
    assert "--lr" in unlearn(capsys, "--method", "ga", "--forget", str(forget), "--out", out, "--lr", "-1")
    assert "--retain" in unlearn(capsys, "--method", "graddiff", "--forget", str(forget), "--out", out)


@pytest.mark.parametrize("content, message", [
    ("", "holds no examples"),
    ('{"question": "Who wrote it?"}\n', "line 1"),
    ('{"question": "Who wrote it?", "answer": "Rowling"}\nnot json\n', "line 2"),
])
def test_bad_forget_data_is_named_with_its_line(capsys, tmp_path, content, message):
    data = tmp_path / "hp.jsonl"
    data.write_text(content)
    text = unlearn(capsys, "--method", "flat", "--forget", str(data), "--out", str(tmp_path / "v"))
    assert str(data) in text and message in text
    assert not (tmp_path / "v").exists()


def test_missing_forget_file(capsys, tmp_path):
    assert "--forget" in unlearn(capsys, "--method", "flat", "--forget", str(tmp_path / "nope.jsonl"),
                                 "--out", str(tmp_path / "v"))


@pytest.mark.parametrize("args, named", [
    (["--upstream", "localhost:8000"], "--upstream"),
    (["--upstream", "http://h/v1", "--enforcement", "strict"], "--enforcement"),
    (["--upstream", "http://h/v1", "--upstream-timeout", "0"], "--upstream-timeout"),
    (["--upstream", "http://h/v1", "--tool-call-parser", "hermes_2"], "--tool-call-parser: 'hermes_2' is not"),
    (["--upstream", "http://h/v1", "--policy", "no/such/policy.yaml"], "no/such/policy.yaml"),
])
def test_proxy_bad_options_stop_before_anything_starts(capsys, args, named):
    assert main(["proxy", *args]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("guard proxy: ") and named in message, message


@pytest.mark.parametrize("args, named", [
    (["--variant", "hp-flat"], "--variant: expected NAME=PATH, got 'hp-flat'"),
    (["--max-rewinds", "99"], "--max-rewinds: Input should be less than or equal to 32"),
    (["--port", "http"], "--port: Input should be a valid integer"),
    (["--translate", "fr,nl"], "--translate: no translation into English for nl (known: fr, es, it, pt, ca, de)"),
])
def test_serve_bad_options_stop_before_anything_starts(capsys, args, named):
    assert main(["serve", *args]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("guard serve: ") and named in message, message


def test_options_come_from_the_settings_models_and_the_environment(monkeypatch):
    """Every field of a command's settings is an option (secrets aside), and GUARD_<NAME> sets it too."""
    from cli.flags import build, given
    from cli.main import _parser
    from server.settings import ProxySettings, Settings

    parser = _parser()
    serve = parser.parse_args(["serve", "--max-rewinds", "3", "--no-classifier", "--variant", "a=/x", "--variant", "b=/y"])
    assert given(serve, Settings) == {"max_rewinds": "3", "classifier": False, "variants": ["a=/x", "b=/y"]}
    monkeypatch.setenv("GUARD_PENALTY", "2.5")
    monkeypatch.setenv("GUARD_API_KEYS", "k1,k2")
    settings = build(Settings, serve)
    assert (settings.max_rewinds, settings.classifier, settings.penalty, settings.keys[0]) == (3, False, 2.5, "k1,k2")
    assert settings.variants == {"a": Path("/x"), "b": Path("/y")}
    assert "api_keys" not in vars(parser.parse_args(["serve"]))  # never on a command line
    help_text = parser._subparsers._group_actions[0].choices["proxy"].format_help()
    for name in ProxySettings.model_fields:
        if name not in ("api_keys", "admin_keys"):
            assert "-" + name.replace("_", "-") in help_text, name  # (--no-classifier for classifier)


@pytest.mark.parametrize("args, named", [
    (["--suite", "huge", "--out", "x"], "--suite: unknown 'huge'; known: tiny, small, known, restor, restor-tiny"),
    (["--suite", "tiny"], "--out: is required"),
])
def test_bench_bad_options_stop_before_anything_starts(capsys, args, named):
    assert main(["bench", *args]) == 2
    message = capsys.readouterr().err.strip()
    assert message == f"guard bench: {named}", message


@pytest.mark.parametrize("command", [["model-path"], ["bench", "--out", "x"], ["serve"]])
def test_a_guard_home_that_is_a_file_stops_every_command(capsys, monkeypatch, tmp_path, command):
    file = tmp_path / "home"
    file.write_text("not a folder")
    monkeypatch.setenv("GUARD_HOME", str(file))
    assert main(command) == 2
    assert capsys.readouterr().err.strip() == f"guard {command[0]}: GUARD_HOME: {file} is a file, not a folder"
