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
