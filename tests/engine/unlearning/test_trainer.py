"""A few steps of each method on a tiny model lower the forget answers' probability; export is complete."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import FORGET_QA, RETAIN_QA, write_jsonl
from unlearning.config import UnlearnConfig
from unlearning.trainer import learning_rate_at, unlearn


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_jsonl(folder / "forget.jsonl", FORGET_QA), write_jsonl(folder / "retain.jsonl", RETAIN_QA)


def run(tiny_model_dir, data, out, **overrides):
    forget, retain = data
    fields = dict(method="flat", forget=forget, out=out, model=str(tiny_model_dir), lr=2e-3, max_steps=6,
                  batch_size=2, warmup_steps=1, seed=0)
    if overrides.get("method") in ("graddiff", "ssd", "salun"):
        fields["retain"] = retain
    fields.update(overrides)
    return unlearn(UnlearnConfig(**fields), progress=False)


@pytest.mark.parametrize("method, extra", [
    # FLAT works on probabilities, not log-probabilities: near p = 0.95 its gradient is small (dp/dlogit =
    # p(1 - p)), so it gets a higher rate; TV's, tanh'(x)/2, is about a quarter of KL's: higher still.
    ("flat", {"divergence": "kl", "lr": 8e-3}), ("flat", {"divergence": "js", "lr": 8e-3}),
    ("flat", {"divergence": "tv", "lr": 3e-2}), ("flat", {"divergence": "pearson", "lr": 8e-3}),
    ("ga", {}), ("graddiff", {}), ("npo", {"lr": 5e-3}),
])
def test_each_method_lowers_the_forget_answer_probability(tiny_model_dir, data, tmp_path, method, extra):
    summary = run(tiny_model_dir, data, tmp_path / "variant", method=method, **extra)
    assert summary.forget_prob_before > 0.3  # the tiny model was taught these answers
    assert summary.forget_prob_after < summary.forget_prob_before - 0.02
    assert summary.steps == 6


def test_a_lora_variant_is_an_adapter_with_its_card(tiny_model_dir, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # fp32: the check below evaluates the exported adapter in fp32 (bf16 autocast, where the CPU has bf16,
    # moves the probability by a few 1e-4)
    summary = run(tiny_model_dir, data, tmp_path / "hp-flat", precision="fp32")
    out = tmp_path / "hp-flat"
    assert {"adapter_config.json", "adapter_model.safetensors", "unlearn-card.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    assert not (tmp_path / ".hp-flat.partial").exists()
    card = json.loads((out / "unlearn-card.json").read_text())
    assert card["method"] == "flat" and card["divergence"] == "kl" and card["kind"] == "lora"
    assert card["hyperparameters"]["lr"] == 2e-3 and card["hyperparameters"]["lora_rank"] == 8
    assert len(card["data"]["forget"]["sha256"]) == 64 and card["data"]["forget"]["examples"] == len(FORGET_QA)
    assert card["base_model"]["path"] == str(tiny_model_dir)
    assert card["results"]["last_loss"] == pytest.approx(summary.last_loss)
    assert card["results"]["forget_prob_after"] == pytest.approx(summary.forget_prob_after)
    assert "flat (kl)" in (out / "README.md").read_text()

    # The exported adapter on the base model reproduces the trained model's forget probability.
    from transformers import AutoTokenizer

    from unlearning.data import Item, collate, encode
    from unlearning.losses import answer_token_prob

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), out)
    batch = collate([encode(tokenizer, Item(q, a, chat=True), 256) for q, a in FORGET_QA], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert answer_token_prob(logits, batch["labels"]).mean().item() == pytest.approx(summary.forget_prob_after, abs=1e-4)


def test_a_full_variant_is_a_checkpoint_with_its_tokenizer(tiny_model_dir, data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run(tiny_model_dir, data, tmp_path / "hp-ga", method="ga", lora=False, max_steps=2)
    out = tmp_path / "hp-ga"
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert json.loads((out / "unlearn-card.json").read_text())["kind"] == "full"
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    assert len(AutoTokenizer.from_pretrained(out)) == len(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_a_merged_variant_is_a_checkpoint_that_answers_as_the_adapter_did(tiny_model_dir, data, tmp_path):
    from transformers import AutoModelForCausalLM

    from unlearning.data import Item, collate, encode
    from unlearning.losses import answer_token_prob
    from transformers import AutoTokenizer

    summary = run(tiny_model_dir, data, tmp_path / "merged", method="ga", merge=True, precision="fp32")
    out = tmp_path / "merged"
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    assert summary.kind == "merged" and "LoRA adapter merged" in (out / "README.md").read_text()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    batch = collate([encode(tokenizer, Item(q, a, chat=True), 256) for q, a in FORGET_QA], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # the same model to bf16 rounding of the merged weights, and unlike the base model
    merged = answer_token_prob(logits, batch["labels"]).mean().item()
    assert merged == pytest.approx(summary.forget_prob_after, abs=0.01)
    assert merged < summary.forget_prob_before - 0.02


def test_same_seed_same_losses(tiny_model_dir, data, tmp_path):
    a = run(tiny_model_dir, data, tmp_path / "a", method="ga", max_steps=3)
    b = run(tiny_model_dir, data, tmp_path / "b", method="ga", max_steps=3)
    assert (a.first_loss, a.last_loss) == pytest.approx((b.first_loss, b.last_loss), rel=1e-5)


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate_at(step, 1.0, warmup=2, total=6) for step in range(6)]
    assert rates == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("overrides, message", [
    ({"method": "rmu"}, "method: unknown 'rmu'; known: flat, ga, graddiff, npo, ssd, salun"),
    ({"method": "ssd", "retain": "r.jsonl"}, "lora: --method ssd changes the model's own weights, not an adapter: "
                                             "pass --full"),
    ({"method": "ssd", "lora": False}, "retain: --method ssd needs --retain FILE"),
    ({"method": "ssd", "retain": "r.jsonl", "lora": False, "alpha": 0}, "alpha"),
    ({"method": "salun", "retain": "r.jsonl"}, "lora: --method salun changes the model's own weights"),
    ({"method": "salun", "retain": "r.jsonl", "lora": False, "saliency": 1.5}, "saliency"),
    ({"method": "salun", "retain": "r.jsonl", "lora": False, "forget_loss": "npo"}, "forget_loss"),
    ({"method": "salun", "retain": "r.jsonl", "lora": False, "weight_decay": 0.1},
     "weight_decay: --method salun trains its saliency mask only"),
    ({"divergence": "hellinger"}, "divergence: unknown 'hellinger'; known: kl, pearson, js, tv"),
    ({"method": "ga", "divergence": "kl"}, "divergence: applies to --method flat only"),
    ({"method": "graddiff"}, "retain: --method graddiff needs --retain FILE"),
    ({"retain": "r.jsonl"}, r"retain: --method flat does not use retain data \(graddiff, ssd, salun do\)"),
    ({"lora": False, "merge": True}, "merge: merges a LoRA adapter"),
    ({"lr": -1}, "lr"),
    ({"max_steps": 0}, "max_steps"),
    ({"precision": "fp8"}, "precision"),
])
def test_config_errors_name_the_field(tmp_path, overrides, message):
    fields = dict(method="flat", forget="f.jsonl", out=tmp_path / "out") | overrides
    with pytest.raises(ValueError, match=message):
        UnlearnConfig(**fields)


def test_a_non_empty_out_folder_needs_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="out: .* is not empty"):
        UnlearnConfig(method="ga", forget="f.jsonl", out=tmp_path)
    assert UnlearnConfig(method="ga", forget="f.jsonl", out=tmp_path, overwrite=True).overwrite


def test_ssd_dampens_without_training_and_writes_a_full_variant(tiny_model_dir, data, tmp_path):
    """Alpha 1: every parameter more important to the forget answers than to the retain answers is
    dampened; the forget answers get less likely, and the variant is a checkpoint with its card."""
    summary = run(tiny_model_dir, data, tmp_path / "ssd", method="ssd", lora=False, alpha=1.0, dampening=1.0)
    assert summary.steps == 0 and summary.first_loss is None and 0 < summary.selected < 1
    assert summary.forget_prob_after < summary.forget_prob_before - 0.02
    card = json.loads((tmp_path / "ssd" / "unlearn-card.json").read_text())
    assert (card["method"], card["kind"], card["results"]["selected"]) == ("ssd", "full", summary.selected)
    assert "lr" not in card["hyperparameters"] and card["hyperparameters"]["alpha"] == 1.0
    assert "parameters dampened" in (tmp_path / "ssd" / "README.md").read_text()
    assert (tmp_path / "ssd" / "config.json").exists()


@pytest.mark.parametrize("forget_loss", ["random", "ga"])
def test_salun_trains_its_saliency_mask_only_and_writes_a_full_variant(tiny_model_dir, data, tmp_path, forget_loss):
    """A quarter of the weights are salient: those move, every other weight stays exactly as it was."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "salun"
    summary = run(tiny_model_dir, data, out, method="salun", lora=False, saliency=0.25, forget_loss=forget_loss,
                  lr=5e-3, precision="fp32")
    assert summary.steps == 6 and summary.selected == pytest.approx(0.25, abs=0.01)
    assert summary.forget_prob_after < summary.forget_prob_before - 0.02
    before = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).named_parameters())
    moved = total = 0
    for name, weight in AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).named_parameters():
        moved += int((weight != before[name]).sum())
        total += weight.numel()
    assert 0 < moved / total <= summary.selected
    card = json.loads((out / "unlearn-card.json").read_text())
    assert (card["method"], card["results"]["selected"], card["hyperparameters"]["saliency"]) == (
        "salun", summary.selected, 0.25)
    assert "parameters trained (saliency mask)" in (out / "README.md").read_text()
