"""The policy store: a version per change, in real SQLite, surviving restarts and crashes mid-update."""

import subprocess
import sys
import threading

import pytest

from guard.policy import Policy, Target, load_policy
from server.state.policy_store import FILE_NAME, PolicyStore, StoreError, TargetExists, TargetNotFound

HP = load_policy("examples/harry-potter.yaml")
EINSTEIN = Target(id="einstein", description="Albert Einstein, the physicist.", phrases=("Einstein",))


def test_an_empty_store_is_seeded_once_then_versioned_per_change(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.current().version == 0 and store.current().policy == Policy()
    assert store.seed(HP, "hp.yaml") == 1
    assert store.seed(Policy(), "other.yaml") is None  # not empty any more: the seed is not applied
    assert store.add(EINSTEIN, "admin-key-id") == 2
    assert store.current().policy.target_ids == ["harry-potter", "einstein"]
    assert store.delete("harry-potter", "admin-key-id") == 3
    assert store.current().policy.target_ids == ["einstein"] and store.version() == 3
    assert store.replace(store.current().policy, "hp.yaml") is None  # no change, no version
    assert [(h["version"], h["change"], h["key_id"]) for h in store.history()] == [
        (1, "seed from hp.yaml", "file"), (2, "add einstein", "admin-key-id"),
        (3, "delete harry-potter", "admin-key-id")]


def test_conflicts_and_unknown_targets_change_nothing(tmp_path):
    store = PolicyStore(tmp_path)
    store.seed(HP, "hp.yaml")
    with pytest.raises(TargetExists):
        store.add(HP.targets[0], "k")
    with pytest.raises(TargetNotFound):
        store.delete("nobody", "k")
    assert store.version() == 1 and store.current().policy == HP


def test_the_policy_survives_a_restart(tmp_path):
    store = PolicyStore(tmp_path)
    store.seed(HP, "hp.yaml")
    store.add(EINSTEIN, "k")
    store.close()
    reopened = PolicyStore(tmp_path)
    assert reopened.current().version == 2 and reopened.current().policy.targets == (*HP.targets, EINSTEIN)


CRASH_DURING_ADD = """
import os, sys
from guard.policy import Target
from server.state.policy_store import PolicyStore

store = PolicyStore(sys.argv[1])
db = store._db

class DiesAtCommit:  # the process dies with the new version written but not committed
    def __getattr__(self, name):
        return getattr(db, name)

    def execute(self, sql, *args):
        if sql == "COMMIT":
            os._exit(9)
        return db.execute(sql, *args)

store._db = DiesAtCommit()
store.add(Target(id="half-written", description="never committed"), "k")
"""


def test_a_crash_mid_update_leaves_the_previous_version_intact(tmp_path):
    store = PolicyStore(tmp_path)
    store.seed(HP, "hp.yaml")
    store.close()
    crashed = subprocess.run([sys.executable, "-c", CRASH_DURING_ADD, str(tmp_path)], capture_output=True, text=True)
    assert crashed.returncode == 9, crashed.stderr  # it did die inside the transaction
    reopened = PolicyStore(tmp_path)
    assert reopened.current().version == 1 and reopened.current().policy == HP
    assert reopened.add(EINSTEIN, "k") == 2  # and the store is writable: no lock left behind


def test_writers_sharing_a_store_lose_nothing(tmp_path):
    """Replicas sharing one state dir: concurrent adds from separate connections all land."""
    stores = [PolicyStore(tmp_path) for _ in range(4)]
    targets = [Target(id=f"t-{i}-{j}", description="x") for i in range(4) for j in range(5)]

    def add_all(store, mine):
        for target in mine:
            store.add(target, "k")
    threads = [threading.Thread(target=add_all, args=(store, targets[i * 5:(i + 1) * 5]))
               for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stores[0].current().policy.target_ids) == sorted(t.id for t in targets)
    assert stores[0].version() == 20


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=FILE_NAME):
        PolicyStore(tmp_path)


def test_without_a_state_dir_the_store_is_in_memory():
    store = PolicyStore(None)
    store.add(EINSTEIN, "k")
    assert store.path is None and store.current().policy.target_ids == ["einstein"]
