"""The audit log: a JSON line per restricted request, without text unless asked, rotated."""

import json

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.state.audit import AuditLog
from server.state.auth import key_id
from server.settings import Settings
from tests.support.fakes import FakeEngine
from tests.support.servers import MODEL

POLICY = "examples/harry-potter.yaml"


def ask(client, question, key=None):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": MODEL, "messages": [{"role": "user", "content": question}]})


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("audit_text", [False, True])
def test_one_record_per_restricted_request(tokenizer, tmp_path, monkeypatch, audit_text):
    monkeypatch.setenv("GUARD_API_KEYS", "k-user")
    log = tmp_path / "audit" / "guard.jsonl"
    engine = FakeEngine(tokenizer, ["It", " was", " someone", "."])
    app = create_app(Settings(policy=POLICY, audit_log=log, audit_text=audit_text), make_engine=lambda *_: engine)
    with TestClient(app) as client:
        restricted = ask(client, "Who wrote the Harry Potter books?", "k-user")
        ask(client, "What is the capital of France?", "k-user")  # not restricted: no record
        ask(client, "Who wrote the Harry Potter books?")  # 401: no record either
    assert restricted.headers["x-guard-targets"] == "harry-potter"
    [record] = records(log)
    assert record["targets"] == ["harry-potter"] and record["action"] == "penalised"
    assert record["key_id"] == key_id("k-user") and "k-user" not in log.read_text()
    assert record["policy_version"] == 1 and record["request_id"]  # the policy file seeds version 1
    if audit_text:
        assert record["prompt"] == "Who wrote the Harry Potter books?" and record["answer"] == "It was someone."
    else:
        assert "prompt" not in record and "Harry" not in log.read_text()


@pytest.mark.parametrize("finish, rewinds, action", [("stop", 0, "penalised"), ("length", 2, "rephrased"),
                                                     ("content_filter", 6, "filtered")])
def test_the_action_says_what_the_guard_did(tmp_path, finish, rewinds, action):
    log = AuditLog(tmp_path / "a.jsonl")
    log.record(request_id="r", key_id="anonymous", target_ids=("t",), policy_version="v", finish_reason=finish,
               rewinds=rewinds)
    log.close()
    assert records(tmp_path / "a.jsonl")[0]["action"] == action


def test_the_log_rotates(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", max_bytes=400, backups=2)
    for i in range(20):
        log.record(request_id=f"r{i}", key_id="anonymous", target_ids=("t",), policy_version="v",
                   finish_reason="stop", rewinds=0)
    log.close()
    assert (tmp_path / "a.jsonl.1").exists() and (tmp_path / "a.jsonl.2").exists()
    assert not (tmp_path / "a.jsonl.3").exists()
    assert records(tmp_path / "a.jsonl")[-1]["request_id"] == "r19"
