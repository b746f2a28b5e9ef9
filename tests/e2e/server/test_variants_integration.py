"""End to end: `guard unlearn` makes a LoRA variant of the bundled model (GA) and a full variant of a tiny
model (SalUn), `guard serve --variant` serves both beside the guarded base, the real `openai` client asks
all of them."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import RETAIN_QA, write_jsonl
from tests.support.servers import EAGER, MODEL, POLICY, Server, names_or_near_misses

FORGET = "examples/hp-forget.jsonl"
HP_QUESTION = "Who wrote the Harry Potter books?"
UNRELATED = "What is the capital of France?"


def guard_unlearn(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cli.main", "unlearn", *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def variants(tmp_path_factory, model_dir, tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("variants")
    with ThreadPoolExecutor(2) as pool:  # both at once: each spends much of its time loading, not training
        # A high rate so that a few steps visibly move the bundled model.
        lora = pool.submit(guard_unlearn, "--method", "ga", "--forget", FORGET, "--out", str(folder / "hp-ga"),
                           "--max-steps", "4", "--lr", "5e-3", "--warmup-steps", "0")
        retain = write_jsonl(folder / "retain.jsonl", RETAIN_QA)  # what the tiny model was taught
        full = pool.submit(guard_unlearn, "--method", "salun", "--forget", FORGET, "--retain", retain,
                           "--out", str(folder / "tiny-salun"), "--model", str(tiny_model_dir), "--full",
                           "--max-steps", "2")
        assert "lora variant written to" in lora.result()
        full.result()
    return folder


@pytest.fixture(scope="module")
def server(variants, tmp_path_factory):
    server = Server("variants", tmp_path_factory.mktemp("logs"), "--policy", POLICY, EAGER,
                    "--variant", f"hp-ga={variants / 'hp-ga'}", "--variant", f"tiny-salun={variants / 'tiny-salun'}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def ask(server: Server, model: str, question: str) -> tuple[str, str]:
    """(greedy answer, the classifier's targets header)."""
    raw = server.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0)
    completion = raw.parse()
    assert completion.model == model
    return completion.choices[0].message.content, raw.headers["x-guard-targets"]


def test_the_cards_describe_the_variants(variants):
    lora = json.loads((variants / "hp-ga" / "unlearn-card.json").read_text())
    full = json.loads((variants / "tiny-salun" / "unlearn-card.json").read_text())
    assert (lora["method"], lora["kind"], lora["results"]["steps"]) == ("ga", "lora", 4)
    assert (full["method"], full["kind"], full["hyperparameters"]["saliency"]) == ("salun", "full", 0.5)
    assert lora["results"]["forget_prob_after"] < lora["results"]["forget_prob_before"]


def test_models_lists_every_variant_plain_and_guarded(server):
    models = {m.id: m for m in server.client().models.list().data}
    assert set(models) == {MODEL, "hp-ga", "hp-ga+guard", "tiny-salun", "tiny-salun+guard"}
    entries = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]}
    assert entries["hp-ga"]["guarded"] is False and entries["hp-ga+guard"]["guarded"] is True
    assert entries["hp-ga"]["parent"] == MODEL
    assert httpx.get(f"{server.url}/health", timeout=10).json()["models"] == list(entries)


def test_a_lora_variant_answers_through_the_base_engine_with_its_adapter(server):
    base, _ = ask(server, MODEL, UNRELATED)
    variant, targets = ask(server, "hp-ga", UNRELATED)
    assert targets == ""
    assert base and variant != base  # same engine, the adapter changes the answer


def test_a_full_variant_answers_from_its_own_engine(server):
    question, taught = RETAIN_QA[1]  # the tiny model's own retain answer, not the bundled model's
    assert ask(server, "tiny-salun", question)[0] == taught
    assert ask(server, MODEL, question)[0] != taught


@pytest.mark.parametrize("model", [MODEL, "hp-ga+guard", "tiny-salun+guard"])
def test_guarded_names_restrict(server, model):
    answer, targets = ask(server, model, HP_QUESTION)
    assert targets == "harry-potter"
    assert names_or_near_misses(answer) == [], answer


@pytest.mark.parametrize("model", ["hp-ga", "tiny-salun"])
def test_plain_names_are_not_restricted(server, model):
    assert ask(server, model, HP_QUESTION)[1] == ""
