"""The unit tier: pure Python, in seconds. No torch, no vLLM, no model to prepare: the bundled model's
tokenizer comes from tests/data/tokenizer (committed), engines and upstreams are fakes. The tier fails
if anything in it imports torch or vLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TOKENIZER = Path(__file__).parent.parent / "data" / "tokenizer"
HEAVY = ("torch", "vllm")


def committed_tokenizer():
    """The bundled model's tokenizer, read from the test data without torch (transformers' AutoTokenizer
    imports it; the tokenizers backend it picks for this model does not)."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    return TokenizersBackend.from_pretrained(TOKENIZER)


@pytest.fixture(scope="session")
def tokenizer():
    return committed_tokenizer()


@pytest.fixture(scope="session")
def model_dir():
    raise RuntimeError("the unit tier prepares no model: use the `tokenizer` fixture, or move the test to tests/engine")


@pytest.fixture(scope="session", autouse=True)
def _no_torch_nor_vllm(request):
    """Checked when the unit tier runs alone (make unit, and make test's first step): beside the other
    tiers, torch is loaded by them."""
    yield
    if any(item.get_closest_marker("unit") is None for item in request.session.items):  # tiers: tests/conftest.py
        return
    loaded = [name for name in HEAVY if name in sys.modules]
    assert not loaded, f"a unit test imported {', '.join(loaded)}: it belongs in tests/engine"
