"""Schemathesis fuzzes every operation of the app's OpenAPI schema, in-process, with the scripted engine.

Whatever it sends (valid requests, out-of-range numbers, wrong types, nulls, odd unicode, bodies that
are not JSON, undeclared methods), the server answers without a 5xx and without hanging (a request
that takes 10 s fails), every 4xx is OpenAI's error shape `{"error": {"message", "type", "param",
"code"}}`, and every stream ends with `[DONE]`. Operations are read from the schema, so routes added
later are fuzzed as soon as they exist.

Two servers: one where every target restricts every request (no classifier: quick to start), with
API keys and rate limits on so that the auth middleware reads every body, fuzzed on every operation;
and one with the real prompt classifier (trained once, then cached under GUARD_HOME), fuzzed on the
generation routes, where the classifier reads whatever the fuzzer wrote.

Schemathesis' own checks run too, the response checks among them: every route declares its
responses (server.protocol.responses: the OpenAI shapes, every error status, the stream's events as
`Chunk`s or an error, then `[DONE]`), so status codes, content types and bodies, streamed events
included, are checked against the schema. One check is left out: positive_data_acceptance, since a
request the schema allows may still be refused, rightly: a prompt over the fake engine's 64-token
context or max_tokens beyond it (400), a target id taken (409).

Deterministic: derandomized Hypothesis, the same cases in the same order every run. About 20 s.
`schema.parametrize()` on a schema built at import rather than `schemathesis.pytest.from_fixture`:
the latter sets `Node._nodeid`, which pytest 9.2 no longer has.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.python import asgi

from server.app import create_app
from server.settings import Settings
from tests.support.fakes import FakeEngine
from tests.support.servers import MODEL

ADMIN_KEY = "fuzz-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}  # an admin key opens every route
GENERATION = r"^/v1/(chat/)?completions$"
NOT_IN_THE_SCHEMA = [checks.positive_data_acceptance]  # see the module docstring
# Schemathesis reads 20 events of a stream by default and cuts it there; a stream of 16 choices has
# more (each choice's role, words and finish), and the check needs it whole, to its [DONE].
MAX_STREAM_EVENTS = 1000
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def guard_settings(classifier: bool) -> Settings:
    # Limits that never bite but are on: the auth middleware then parses every body for its max_tokens.
    return Settings(policy="examples/harry-potter.yaml", classifier=classifier, reload_seconds=0,
                    rate_limit_rpm=10**6, rate_limit_tpm=10**12)


def served_schema() -> dict:
    """The app's schema, read from an app that is never started (create_app starts no engine), with
    `model` narrowed to the one model these apps serve: any string is valid to the generic schema, and
    a random one only ever reaches the 404 for an unknown model, never the guard or the engine. Other
    names are still sent, as negative cases, and must get a 4xx."""
    raw = create_app(guard_settings(classifier=False)).openapi()
    for component in raw["components"]["schemas"].values():
        if component.get("properties", {}).get("model", {}).get("type") == "string":
            component["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    return raw


schema = schemathesis.openapi.from_dict(served_schema())
schema.config.max_stream_events = MAX_STREAM_EVENTS
# A negative case too big to send (a list past its maxItems, each item long) is refused before it is
# parsed: 413 request_too_large, OpenAI-shaped like every other refusal.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")


@contextmanager
def started(tokenizer, classifier: bool):
    """An app and a client of it; schemathesis' pytest plugin ends the app's lifespan after each test."""
    with pytest.MonkeyPatch.context() as env:  # create_app reads the keys from the environment
        env.setenv("GUARD_ADMIN_KEYS", ADMIN_KEY)
        env.delenv("GUARD_API_KEYS", raising=False)
        engine = FakeEngine(tokenizer, ["The", " capital", " is", " Paris", "."])
        app = create_app(guard_settings(classifier), make_engine=lambda *_: engine)
    with asgi.get_client(app, max_stream_events=MAX_STREAM_EVENTS) as client:
        yield app, client


@pytest.fixture()
def every_target_app(tokenizer):
    with started(tokenizer, classifier=False) as app_and_client:
        yield app_and_client


@pytest.fixture()
def classifier_app(tokenizer):
    with started(tokenizer, classifier=True) as app_and_client:
        yield app_and_client


def assert_openai_error(status: int, text: str) -> dict:
    body = json.loads(text)
    assert set(body) == {"error"}, f"{status}: {text}"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, f"{status}: {text}"
    assert isinstance(error["message"], str) and error["message"], f"{status}: {text}"
    assert isinstance(error["type"], str) and error["type"], f"{status}: {text}"
    assert all(error[key] is None or isinstance(error[key], str) for key in ("param", "code")), f"{status}: {text}"
    return error


def answer_is_sound(case, app, client) -> None:
    """No 5xx, no hang (a read timeout fails the case), OpenAI-shaped errors, whole streams."""
    response = case.call(app=app, session=client, headers=AUTH, timeout=10)
    assert response.status_code < 500, f"{response.status_code}: {response.text}"
    if response.status_code >= 400:
        assert_openai_error(response.status_code, response.text)
    elif response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n"), response.text
    case.validate_response(response, excluded_checks=NOT_IN_THE_SCHEMA)


@schema.parametrize()
@FUZZ
def test_every_operation_answers_bad_input_with_openai_4xx(case, every_target_app):
    answer_is_sound(case, *every_target_app)


@schema.include(path_regex=GENERATION).parametrize()
@FUZZ
def test_generation_through_the_classifier_never_fails(case, classifier_app):
    answer_is_sound(case, *classifier_app)


CHAT, TEXT = "/v1/chat/completions", "/v1/completions"


def chat_body(**overrides) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], **overrides}


def user_content(*parts) -> dict:
    return chat_body(messages=[{"role": "user", "content": list(parts)}])


def raw_chat(content_json: str, extra: str = "") -> str:
    return '{"model": "%s", "messages": [{"role": "user", "content": %s}]%s}' % (MODEL, content_json, extra)


# Inputs that the fuzzing, and probing around what it found, showed wrong; each now a 400 naming its field.
@pytest.mark.parametrize("path, raw, param", [
    # were 500s
    pytest.param(CHAT, user_content({"type": "text", "text": 5}), "messages.0.content.0.text", id="part-text-not-str"),
    pytest.param(TEXT, '{"model": "%s", "prompt": "\\ud800"}' % MODEL, "prompt", id="lone-surrogate-prompt"),
    pytest.param(TEXT, "[" * 100_000 + "]" * 100_000, None, id="json-too-deep-for-the-rate-limiter"),
    # were accepted, and handed to the engine (or forwarded upstream) as they were
    pytest.param(CHAT, user_content({"type": "text"}), "messages.0.content.0", id="text-part-without-text"),
    pytest.param(CHAT, chat_body(seed=2**64), "seed", id="seed-beyond-64-bits"),
    pytest.param(CHAT, chat_body(stream=0), "stream", id="number-for-a-boolean"),
    pytest.param(CHAT, chat_body(max_tokens="5"), "max_tokens", id="string-for-an-integer"),
    pytest.param(TEXT, '{"model": "%s", "prompt": "hi", "user": "\\udfff"}' % MODEL, "user",
                 id="lone-surrogate-in-an-unknown-field"),
    # were 400s with a misleading message or param
    pytest.param(CHAT, raw_chat('"\\ud800"'), "messages.0.content", id="lone-surrogate-content"),
    pytest.param(CHAT, raw_chat('"hi"', ', "temperature": NaN'), "temperature", id="nan"),
    pytest.param(CHAT, chat_body(messages=[5]), "messages.0", id="message-not-an-object"),
    pytest.param(CHAT, user_content(5), "messages.0.content", id="content-part-not-an-object"),
    pytest.param(CHAT, chat_body(stop=["a", ""]), "stop.1", id="empty-stop-sequence"),
    pytest.param(TEXT, {"model": MODEL, "prompt": ["a", 5]}, "prompt", id="prompt-of-numbers"),
])
def test_inputs_the_fuzzing_found(every_target_app, path, raw, param):
    _, client = every_target_app
    body = raw if isinstance(raw, str) else json.dumps(raw)
    response = client.post(path, data=body.encode(), headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = assert_openai_error(response.status_code, response.text)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ") if param else error["message"]


def test_an_undeclared_method_gets_405_naming_every_allowed_one(every_target_app):
    """Starlette names only the methods of the first route of a path (`POST` where GET and POST are
    two routes); RFC 9110 wants them all."""
    _, client = every_target_app
    for path, operations in schema.raw_schema["paths"].items():
        if "{" not in path:
            response = client.request("TRACE", path, headers=AUTH)
            assert response.status_code == 405, path
            assert response.headers["allow"] == ", ".join(sorted(method.upper() for method in operations)), path
            assert_openai_error(response.status_code, response.text)


@pytest.mark.parametrize("field, value, param", [
    ("phrases", '["abcd\\ud800"]', "phrases.0"), ("documents", '["abcd\\ud800"]', "documents.0"),
    ("examples", '["abcd\\ud800"]', "examples.0"), ("description", '"abcd\\ud800"', "description"),
    ("qa", '[{"question": "abcd\\ud800", "answer": "a"}]', "qa.0.question"),
])
def test_a_lone_surrogate_in_a_forget_target_is_a_400(every_target_app, field, value, param):
    _, client = every_target_app
    body = '{"id": "surrogate", "description": "d", "%s": %s}' % (field, value)
    response = client.post("/v1/forget", data=body.encode(), headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400 and assert_openai_error(400, response.text)["param"] == param
