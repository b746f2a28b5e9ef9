"""API keys, scopes and rate limits through create_app (scripted engine): the auth matrix."""

import logging

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.state.auth import Keys, key_id
from server.settings import Settings
from tests.support.fakes import FakeEngine
from tests.support.servers import MODEL

USER, ADMIN = "user-key-1", "admin-key-1"


@pytest.fixture()
def make_client(tokenizer, monkeypatch):
    def make(keys: bool = True, **settings):
        if keys:
            monkeypatch.setenv("GUARD_API_KEYS", f"{USER}, other-user")
            monkeypatch.setenv("GUARD_ADMIN_KEYS", ADMIN)
        else:
            monkeypatch.delenv("GUARD_API_KEYS", raising=False)
            monkeypatch.delenv("GUARD_ADMIN_KEYS", raising=False)
        engine = FakeEngine(tokenizer, ["Paris", "."])
        return TestClient(create_app(Settings(**settings), make_engine=lambda *_: engine))
    return make


def chat(client, key=None, **overrides):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], **overrides}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def get(client, path, key=None):
    return client.get(path, headers={"authorization": f"Bearer {key}"} if key else {})


@pytest.mark.parametrize("path, key, status", [
    ("/v1/models", None, 401), ("/v1/models", "wrong", 401), ("/v1/models", USER, 200), ("/v1/models", ADMIN, 200),
    ("/metrics", None, 401), ("/metrics", USER, 403), ("/metrics", ADMIN, 200),
    ("/v1/forget", USER, 403), ("/v1/forget", None, 401),
    ("/health", None, 200),
])
def test_the_auth_matrix(make_client, path, key, status):
    with make_client() as client:
        response = get(client, path, key)
        assert response.status_code == status, response.text
        if status in (401, 403):
            error = response.json()["error"]
            assert error["code"] == ("invalid_api_key" if status == 401 else "insufficient_scope")


def test_completions_need_a_key_and_answer_with_one(make_client):
    with make_client() as client:
        assert chat(client).status_code == 401
        assert chat(client, "user-key-").status_code == 401  # a prefix of a key is not the key
        assert chat(client, USER).status_code == 200
        assert chat(client, "other-user").status_code == 200
        assert chat(client, ADMIN).status_code == 200


def test_no_keys_is_open_with_a_loud_warning(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="guard.auth"), make_client(keys=False) as client:
        assert chat(client).status_code == 200 and get(client, "/metrics").status_code == 200
    assert any("NO API KEYS SET" in r.getMessage() for r in caplog.records)


def test_keys_are_never_logged(make_client, caplog):
    with caplog.at_level(logging.DEBUG), make_client() as client:
        chat(client, USER)
        chat(client, "wrong-key-xyz")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert USER not in logged and ADMIN not in logged and "wrong-key-xyz" not in logged
    assert key_id(USER) in logged  # known by its id


def test_the_request_rate_limit_answers_429_with_retry_after(make_client):
    with make_client(rate_limit_rpm=2) as client:
        assert [chat(client, USER).status_code for _ in range(2)] == [200, 200]
        limited = chat(client, USER)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert chat(client, "other-user").status_code == 200  # per key


def test_the_token_rate_limit_counts_the_tokens_asked_for(make_client):
    with make_client(rate_limit_tpm=10) as client:
        assert chat(client, USER, max_tokens=6).status_code == 200
        assert chat(client, USER, max_tokens=6).status_code == 429
        assert chat(client, USER, max_tokens=4).status_code == 200


def test_scopes():
    keys = Keys(user=("u",), admin=("a",))
    assert (keys.scope_of("u"), keys.scope_of("a"), keys.scope_of("x"), keys.scope_of("")) == ("user", "admin", None, None)
    assert Keys().open and not keys.open
