"""Served variants: folder inspection, names, and routing through create_app with fake engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from server.engines.variants import Variant, engine_lora_rank, inspect_variant, load_variants, model_names, parse_variant
from tests.support.fakes import FakeEngine
from tests.support.servers import MODEL


def lora_folder(path: Path, rank: int = 8, peft_type: str = "LORA") -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": rank}))
    return path


def full_folder(path: Path, tokenizer) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    tokenizer.save_pretrained(path)
    return path


def test_parse_variant():
    assert parse_variant("hp-flat=variants/hp") == ("hp-flat", Path("variants/hp"))
    for bad in ("hp-flat", "=x", "hp="):
        with pytest.raises(ValueError, match="expected NAME=PATH"):
            parse_variant(bad)


def test_inspect_tells_lora_from_full(tmp_path, tokenizer):
    lora = inspect_variant("a", lora_folder(tmp_path / "a", rank=4))
    assert (lora.kind, lora.lora_rank) == ("lora", 4)
    assert inspect_variant("b", full_folder(tmp_path / "b", tokenizer)).kind == "full"


@pytest.mark.parametrize("make, name, message", [
    (lambda p: p, "x", "is not a folder"),
    (lambda p: p.mkdir() or p, "x", "holds neither a LoRA adapter"),
    (lambda p: lora_folder(p, peft_type="IA3"), "x", "IA3 adapter; only LoRA"),
    (lambda p: lora_folder(p, rank=1024), "x", "rank 1024 is above"),
    (lambda p: lora_folder(p), "x+guard", "a name is letters"),
])
def test_unservable_variants_are_named(tmp_path, make, name, message):
    with pytest.raises(ValueError, match=f"--variant {name.replace('+', '.')}: .*{message}"):
        inspect_variant(name, make(tmp_path / "v"))


def test_engine_lora_rank_fits_every_adapter():
    def v(rank):
        return Variant("v", Path("."), "lora", rank)

    assert engine_lora_rank([Variant("f", Path("."), "full")]) is None
    assert engine_lora_rank([v(8)]) == 8
    assert engine_lora_rank([v(4), v(12)]) == 16


def test_names_base_guarded_then_plain_and_guarded_per_variant():
    variant = Variant("hp-flat", Path("."), "lora", 8)
    assert model_names("base", [variant]) == {"base": (None, True), "hp-flat": (variant, False),
                                              "hp-flat+guard": (variant, True)}
    with pytest.raises(ValueError, match="the name base is already served"):
        model_names("base", [Variant("base", Path("."), "full")])


def test_a_full_variant_must_keep_the_base_vocabulary(tmp_path, tokenizer, model_dir):
    from classifiers.encoder import encoder_location
    from transformers import AutoTokenizer

    other = full_folder(tmp_path / "other", AutoTokenizer.from_pretrained(encoder_location("default")))
    with pytest.raises(ValueError, match="--variant other: its tokenizer differs"):
        load_variants({"other": other}, str(model_dir))
    same = full_folder(tmp_path / "same", tokenizer)
    assert load_variants({"same": same}, str(model_dir))[0].kind == "full"


@pytest.fixture(scope="module")
def app_of_variants(tokenizer, tmp_path_factory):
    """Base + a LoRA variant (answered by the base engine) + a full variant (its own engine), started
    once for the module."""
    tmp_path, engines = tmp_path_factory.mktemp("variants"), {}

    def make_engine(path, loras, rank, max_model_len):
        engines[Path(path).name] = engine = FakeEngine(tokenizer, ["Fine", "."])
        engine.loras_served, engine.rank, engine.context = loras, rank, max_model_len
        return engine

    settings = Settings(policy="examples/harry-potter.yaml", variants={
        "hp-flat": lora_folder(tmp_path / "hp-flat"), "hp-ga": full_folder(tmp_path / "hp-ga", tokenizer)})
    with TestClient(create_app(settings, make_engine=make_engine)) as client:
        yield client, engines


@pytest.fixture()
def served(app_of_variants):
    client, engines = app_of_variants
    for engine in engines.values():
        engine.healthy = True
    return client, engines


def ask(client, model, question="Who wrote the Harry Potter books?"):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": question}]})


def test_models_lists_base_and_both_forms_of_each_variant(served):
    client, engines = served
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert list(listed) == [MODEL, "hp-flat", "hp-flat+guard", "hp-ga", "hp-ga+guard"]
    assert listed[MODEL]["guarded"] and not listed["hp-flat"]["guarded"] and listed["hp-ga+guard"]["guarded"]
    assert listed["hp-flat"]["parent"] == MODEL and listed["hp-flat"]["root"].endswith("hp-flat")
    base = engines["smollm2-135m-instruct"]
    assert list(base.loras_served) == ["hp-flat"] and base.rank == 8  # one engine for base + LoRA
    assert engines["hp-ga"].loras_served == {}
    assert (base.context, engines["hp-ga"].context) == (2048, 512)  # a checkpoint's own limit caps its engine


@pytest.mark.parametrize("model, engine_name, lora, guarded", [
    (MODEL, "smollm2-135m-instruct", None, True),
    ("hp-flat", "smollm2-135m-instruct", "hp-flat", False),
    ("hp-flat+guard", "smollm2-135m-instruct", "hp-flat", True),
    ("hp-ga", "hp-ga", None, False),
    ("hp-ga+guard", "hp-ga", None, True),
])
def test_each_name_reaches_its_weights_with_or_without_the_guard(served, model, engine_name, lora, guarded):
    client, engines = served
    response = ask(client, model)
    assert response.status_code == 200 and response.json()["model"] == model
    engine = engines[engine_name]
    assert engine.loras[-1] == lora
    spec = engine.seen[-1][2]
    assert (spec is not None) == guarded
    assert response.headers["x-guard-targets"] == ("harry-potter" if guarded else "")


def test_unknown_model_lists_what_is_served(served):
    client, _ = served
    response = ask(client, "hp-npo")
    assert response.status_code == 404
    assert "`hp-flat+guard`" in response.json()["error"]["message"]


def test_health_needs_every_engine(served):
    client, engines = served
    assert client.get("/health").json()["models"] == [MODEL, "hp-flat", "hp-flat+guard", "hp-ga", "hp-ga+guard"]
    engines["hp-ga"].healthy = False
    assert client.get("/health").status_code == 503


def test_bad_variants_stop_create_app(tmp_path):
    with pytest.raises(ValueError, match="--variant hp: .* is not a folder"):
        create_app(Settings(variants={"hp": tmp_path / "missing"}))
