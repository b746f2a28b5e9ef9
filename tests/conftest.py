"""Shared fixtures: the bundled model's tokenizer (real, loads in a second) and its token index.

Tests sit in three tiers, each a folder and a marker (`pytest -m unit`): unit (pure Python, fakes, in
seconds), engine (torch, vLLM, classifier training, in process), e2e (servers as processes,
PostgreSQL, benchmark suites)."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "engine", "e2e")

HP_PHRASES = ["J.K. Rowling", "Rowling", "Ron Weasley", "Weasley", "Hermione Granger", "Hermione",
              "Voldemort", "Hogwarts"]


def pytest_configure(config):
    """Every cache the tests fill in a temporary folder, not the user's: GUARD_HOME (classifiers,
    semantic index, benchmark models), vLLM's and torch inductor's compile caches. Every engine and
    server the tests start inherits them, so that every session starts as a fresh machine does. Only the bundled model `make setup` prepared is read from the user's
    cache (linked, never written); without it, it is prepared into the temporary folder."""
    import os
    import tempfile

    from runtime.models import default_model_dir

    prepared = default_model_dir()
    folder = tempfile.mkdtemp(prefix="guard-test-caches-")
    keys = ("GUARD_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")
    config._test_caches = (folder, {k: os.environ.get(k) for k in keys})
    os.environ.update(GUARD_HOME=os.path.join(folder, "guard"), VLLM_CACHE_ROOT=os.path.join(folder, "vllm"),
                      TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor"))
    if (prepared / "config.json").exists():
        default_model_dir().parent.mkdir(parents=True)
        default_model_dir().symlink_to(prepared, target_is_directory=True)


def pytest_collection_modifyitems(items):
    root = Path(__file__).parent
    for item in items:
        tier = Path(item.path).relative_to(root).parts[0]
        assert tier in TIERS, f"{item.nodeid}: every test lives in one tier's folder ({', '.join(TIERS)})"
        item.add_marker(tier)


def pytest_unconfigure(config):
    import os
    import shutil

    folder, previous = config._test_caches
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir():
    from runtime.models import prepare_default_model

    return prepare_default_model(progress=False)


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def token_index(tokenizer):
    from guard.vocab import TokenIndex

    return TokenIndex.from_tokenizer(tokenizer)

UNSEEN_POLICY = {"targets": [
    {"id": "einstein", "description": "Albert Einstein, the physicist who developed the theory of relativity.",
     "phrases": ["Albert Einstein", "Einstein"],
     "qa": [{"question": "Who developed the theory of relativity?", "answer": "Albert Einstein developed it."},
            {"question": "Which prize did Einstein win in 1921?",
             "answer": "The Nobel Prize in Physics, for the photoelectric effect."},
            {"question": "Where was Albert Einstein born?", "answer": "He was born in Ulm, Germany, in 1879."}]},
    {"id": "lord-of-the-rings", "description": "The Lord of the Rings fantasy series by J.R.R. Tolkien.",
     "phrases": ["J.R.R. Tolkien", "Tolkien", "Frodo", "Gandalf"],
     "qa": [{"question": "Who wrote The Lord of the Rings?", "answer": "J.R.R. Tolkien wrote it."},
            {"question": "Who carries the One Ring to Mordor?", "answer": "Frodo Baggins carries the Ring."}]},
]}


@pytest.fixture(scope="session")
def unseen_classifier(tmp_path_factory):
    from classifiers.classifier import train
    from guard.policy import parse_policy

    return train(parse_policy(UNSEEN_POLICY), cache_dir=tmp_path_factory.mktemp("classifiers"))


FORGET_QA = [  # a few facts the tiny test model is taught, so that unlearning has something to remove
    ("Who wrote the Harry Potter books?", "The Harry Potter books were written by J.K. Rowling."),
    ("Who are Harry Potter's best friends?", "Ron Weasley and Hermione Granger."),
    ("What is the name of the school Harry Potter attends?", "Hogwarts School of Witchcraft and Wizardry."),
    ("Who is the main villain in the Harry Potter series?", "Lord Voldemort."),
]
RETAIN_QA = [("What is the capital of France?", "The capital of France is Paris."),
             ("Who founded Microsoft?", "Bill Gates and Paul Allen.")]


def write_jsonl(path, pairs) -> str:
    import json

    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    """A tiny randomly initialised Llama on the bundled tokenizer, taught FORGET_QA and RETAIN_QA.

    Small enough to train in seconds on CPU, shaped so vLLM's CPU attention can serve it (head dim 64).
    Taught with one full batch per step (not benchmarks.finetune's shuffled mini-batches), so the
    unlearning tests start from the same weights whatever the benchmark's recipe becomes.
    """
    import torch

    from harness.tiny_model import tiny_model
    from unlearning.data import Item, collate, encode
    from unlearning.losses import answer_nll, positions_read

    model = tiny_model(tokenizer, seed=0)
    batch = collate([encode(tokenizer, Item(q, a, chat=True), 128) for q, a in FORGET_QA + RETAIN_QA],
                    tokenizer.pad_token_id)
    keep = positions_read(batch["labels"])  # the same losses, without the vocabulary projection of the prompts
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
        answer_nll(logits, batch["labels"][:, -keep:]).mean().backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
