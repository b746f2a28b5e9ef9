"""Shared fixtures: the bundled model's tokenizer (real, loads in a second) and its token index."""

from __future__ import annotations

import pytest

HP_PHRASES = ["J.K. Rowling", "Rowling", "Ron Weasley", "Weasley", "Hermione Granger", "Hermione",
              "Voldemort", "Hogwarts"]


@pytest.fixture(scope="session")
def model_dir():
    from guard.models import prepare_default_model

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
