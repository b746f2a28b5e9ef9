"""The admin API (`/v1/forget`) through create_app with a scripted engine and the real classifier:
targets added, listed and deleted at run time, enforced without a restart, persisted in the state dir.

The same against the real engine, with keys, is in test_production_integration.py.
"""

import time

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.conftest import UNSEEN_POLICY
from tests.support.fakes import FakeEngine
from tests.support.servers import MODEL

POLICY = "examples/harry-potter.yaml"
EINSTEIN = UNSEEN_POLICY["targets"][0]
RELATIVITY = "Who developed the theory of relativity?"


def app_for(tokenizer, state_dir, **settings):
    engine = FakeEngine(tokenizer, ["Someone", "."])
    return create_app(Settings(policy=POLICY, state_dir=state_dir, reload_seconds=0.2, **settings),
                      make_engine=lambda *_: engine)


def targets_for(client, question: str) -> str:
    response = client.post("/v1/chat/completions",
                           json={"model": MODEL, "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    return response.headers["x-guard-targets"]


def wait_enforced(client, version: int, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while (listing := client.get("/v1/forget").json())["enforced_version"] < version:
        assert listing["error"] is None, listing["error"]
        assert time.monotonic() < deadline, f"version {version} not enforced after {seconds} s: {listing}"
        time.sleep(0.1)
    return listing


def test_add_list_delete_take_effect_without_a_restart(tokenizer, tmp_path):
    with TestClient(app_for(tokenizer, tmp_path)) as client:
        listing = client.get("/v1/forget").json()
        assert [t["id"] for t in listing["data"]] == ["harry-potter"]
        assert listing["version"] == listing["enforced_version"] == 1  # seeded from the policy file
        assert targets_for(client, RELATIVITY) == ""

        added = client.post("/v1/forget", json=EINSTEIN)
        assert added.status_code == 201 and added.json()["id"] == "einstein" and added.json()["version"] == 2
        listing = wait_enforced(client, 2)
        assert [t["id"] for t in listing["data"]] == ["harry-potter", "einstein"]
        assert listing["data"][1]["qa"][0]["question"] == RELATIVITY  # the target as it was posted
        assert targets_for(client, RELATIVITY) == "einstein"
        assert targets_for(client, "Who wrote the Harry Potter books?") == "harry-potter"
        assert client.get("/health").json()["policy_version"] == 2

        deleted = client.delete("/v1/forget/harry-potter")
        assert deleted.status_code == 200 and deleted.json() == {
            "id": "harry-potter", "object": "forget.target.deleted", "deleted": True, "version": 3}
        wait_enforced(client, 3)
        assert targets_for(client, "Who wrote the Harry Potter books?") == ""
        assert targets_for(client, RELATIVITY) == "einstein"


def test_targets_survive_a_restart_with_the_same_state_dir(tokenizer, tmp_path):
    with TestClient(app_for(tokenizer, tmp_path)) as client:
        wait_enforced(client, client.post("/v1/forget", json=EINSTEIN).json()["version"])
    # The same command again: the policy file does not overwrite the store; the added target stays.
    with TestClient(app_for(tokenizer, tmp_path)) as client:
        listing = client.get("/v1/forget").json()
        assert [t["id"] for t in listing["data"]] == ["harry-potter", "einstein"]
        assert listing["enforced_version"] == 2
        assert targets_for(client, RELATIVITY) == "einstein"


def test_replicas_sharing_a_state_dir_follow_each_others_changes(tokenizer, tmp_path):
    """Without the classifier every target restricts every request: the header lists the policy."""
    with (TestClient(app_for(tokenizer, tmp_path, classifier=False)) as one,
          TestClient(app_for(tokenizer, tmp_path, classifier=False)) as two):
        version = one.post("/v1/forget", json=EINSTEIN).json()["version"]
        wait_enforced(two, version)
        assert targets_for(two, RELATIVITY) == "harry-potter,einstein"


@pytest.fixture(scope="module")
def admin_client(tokenizer, tmp_path_factory):
    """For requests that must change nothing: one app, no classifier to train."""
    with TestClient(app_for(tokenizer, tmp_path_factory.mktemp("state"), classifier=False)) as client:
        yield client


@pytest.mark.parametrize("body, param", [
    ({**EINSTEIN, "id": "Not An Id"}, "id"),
    ({**EINSTEIN, "description": ""}, "description"),
    ({**EINSTEIN, "phrases": ["Al"]}, "phrases"),  # too short: it would forbid common text
    ({**EINSTEIN, "qa": [{"question": "q"}]}, "qa.0.answer"),
    ({**EINSTEIN, "phrases": [f"Name {i}" for i in range(5001)]}, "phrases"),  # more than can be enforced
    ({**EINSTEIN, "colour": "blue"}, "colour"),
    ({"description": "no id"}, "id"),
    ([EINSTEIN], None),
])
def test_bad_targets_get_400s_naming_the_field_and_change_nothing(admin_client, body, param):
    response = admin_client.post("/v1/forget", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert admin_client.get("/v1/forget").json()["version"] == 1


def test_a_target_that_would_take_the_policy_past_its_limits_gets_a_400_naming_phrases(tokenizer, tmp_path):
    with TestClient(app_for(tokenizer, tmp_path, classifier=False)) as client:
        for k in range(3):
            target = {"id": f"names-{k}", "description": "names", "phrases": [f"Name{k} {i}" for i in range(1000)]}
            assert client.post("/v1/forget", json=target).status_code == 201
        refused = client.post("/v1/forget", json={**EINSTEIN, "phrases": [f"Other {i}" for i in range(100)]})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "phrases" and "3072" in error["message"] and error["code"] == "policy_limit"
        listing = wait_enforced(client, 4)
        assert [t["id"] for t in listing["data"]] == ["harry-potter", "names-0", "names-1", "names-2"]
        assert "harry-potter" in targets_for(client, "Who wrote the Harry Potter books?")  # still answered, restricted


def test_broken_json_duplicates_and_unknown_ids(admin_client):
    client = admin_client
    broken = client.post("/v1/forget", content=b'{"id": "x", ', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    duplicate = client.post("/v1/forget", json={"id": "harry-potter", "description": "again"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "target_exists"
    unknown = client.delete("/v1/forget/nobody")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "target_not_found"
    assert client.get("/v1/forget").json()["version"] == 1


def test_a_failed_rebuild_keeps_the_previous_version_in_force(tokenizer, tmp_path, monkeypatch):
    import server.serving.generate.deployment as deployment

    real_build = deployment.build_restrictions

    def build(settings, policy, tokenizer_path, version=0):
        if "einstein" in policy.target_ids:
            raise RuntimeError("out of memory")
        return real_build(settings, policy, tokenizer_path, version)
    monkeypatch.setattr(deployment, "build_restrictions", build)
    with TestClient(app_for(tokenizer, tmp_path, classifier=False)) as client:
        client.post("/v1/forget", json=EINSTEIN)
        deadline = time.monotonic() + 30
        while (listing := client.get("/v1/forget").json())["error"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "out of memory" in listing["error"] and listing["version"] == 2 and listing["enforced_version"] == 1
        assert targets_for(client, "Who wrote the Harry Potter books?") == "harry-potter"  # still guarded


def test_admin_routes_need_an_admin_key(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("GUARD_API_KEYS", "k-user")
    monkeypatch.setenv("GUARD_ADMIN_KEYS", "k-admin")
    with TestClient(app_for(tokenizer, tmp_path, classifier=False)) as client:
        def post(key=None):
            return client.post("/v1/forget", json=EINSTEIN, headers={"authorization": f"Bearer {key}"} if key else {})
        assert post().status_code == 401
        assert post("k-user").status_code == 403
        assert client.delete("/v1/forget/harry-potter", headers={"authorization": "Bearer k-user"}).status_code == 403
        assert post("k-admin").status_code == 201
        history = client.app.state.policy.store.history()
        assert history[-1]["key_id"] not in ("anonymous", "file") and "k-admin" not in str(history)
