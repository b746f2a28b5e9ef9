"""The shared policy store on a real PostgreSQL server (pgserver: PostgreSQL's own binaries, from
PyPI, started here in a temporary folder): versions, concurrent writers, NOTIFY to listeners, and a
database killed and restarted under the store."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from guard.policy import Policy, Target, load_policy
from server.state.policy_store import StoreError, TargetExists, TargetNotFound
from server.state.postgres_store import PostgresStore
from tests.conftest import UNSEEN_POLICY

HP = load_policy("examples/harry-potter.yaml")
EINSTEIN = Target.model_validate(UNSEEN_POLICY["targets"][0])


@pytest.fixture()
def store(postgres):
    postgres.reset()
    opened = PostgresStore(postgres.url)
    yield opened
    opened.close()


def test_versions_add_delete_replace_and_history(store):
    assert store.current().version == 0 and store.current().policy == Policy()
    assert store.seed(HP, "hp.yaml") == 1 and store.seed(HP, "hp.yaml") is None  # seeds an empty store only
    assert store.add(EINSTEIN, "key-1") == 2
    with pytest.raises(TargetExists):
        store.add(EINSTEIN, "key-1")
    assert store.current().policy.target_ids == ["harry-potter", "einstein"]
    assert store.delete("harry-potter", "key-2") == 3 and store.version() == 3
    with pytest.raises(TargetNotFound):
        store.delete("harry-potter", "key-2")
    assert store.replace(store.current().policy, "hp.yaml") is None  # no change, no version
    assert [(h["version"], h["change"], h["key_id"]) for h in store.history()] == [
        (1, "seed from hp.yaml", "file"), (2, "add einstein", "key-1"), (3, "delete harry-potter", "key-2")]


def test_concurrent_writers_from_many_replicas_lose_nothing(store, postgres):
    replicas = [PostgresStore(postgres.url) for _ in range(4)]
    targets = [EINSTEIN.model_copy(update={"id": f"person-{i}"}) for i in range(12)]
    try:
        with ThreadPoolExecutor(4) as pool:
            versions = list(pool.map(lambda i: replicas[i % 4].add(targets[i], f"key-{i}"), range(12)))
    finally:
        for replica in replicas:
            replica.close()
    assert sorted(versions) == list(range(1, 13))
    assert sorted(store.current().policy.target_ids) == sorted(t.id for t in targets)


def test_a_listener_hears_of_another_replicas_change(store, postgres):
    heard = threading.Event()
    other = PostgresStore(postgres.url)
    try:
        other.listen(heard.set)
        assert heard.wait(10)  # told once on connecting: versions may have been written before
        heard.clear()
        store.add(EINSTEIN, "key-1")
        assert heard.wait(10)
    finally:
        other.close()


def test_a_database_killed_and_restarted_under_the_store(store, postgres):
    store.seed(HP, "hp.yaml")
    heard = threading.Event()
    store.listen(heard.set)
    assert heard.wait(10)
    heard.clear()
    postgres.kill()
    assert heard.wait(10)  # the listener lost it, and says so (the server finds out at once)
    heard.clear()
    with pytest.raises(StoreError, match="unreachable"):
        store.add(EINSTEIN, "key-1")
    with pytest.raises(StoreError):
        store.version()
    postgres.start()
    assert heard.wait(15)  # the listener is back, and says so
    assert store.current().version == 1  # nothing lost, nothing half-written
    assert store.add(EINSTEIN, "key-1") == 2
