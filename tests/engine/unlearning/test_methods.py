"""The methods registry: one entry per method, each built from a run's settings with the options it reads."""

from __future__ import annotations

import pytest

from unlearning.config import UnlearnConfig
from unlearning.methods import (METHODS, Flat, GradientAscent, GradientDifference, NegativePreference, SaliencyUnlearning,
                                SelectiveSynapticDampening)


def config(tmp_path, method: str, **fields) -> UnlearnConfig:
    return UnlearnConfig(method=method, forget=tmp_path / "f.jsonl", out=tmp_path / "out", **fields)


@pytest.mark.parametrize("method, fields, built", [
    ("flat", {}, Flat("kl")),
    ("flat", {"divergence": "js"}, Flat("js")),
    ("ga", {}, GradientAscent()),
    ("graddiff", {"retain": "r.jsonl", "retain_weight": 0.5}, GradientDifference(0.5)),
    ("npo", {"beta": 0.3}, NegativePreference(0.3)),
])
def test_each_method_is_built_with_the_options_it_reads(tmp_path, method, fields, built):
    run = config(tmp_path, method, **fields)
    assert METHODS[method].from_options(run) == built
    assert run.learning_rate == METHODS[method].default_lr  # LoRA: the method's own rate
    assert config(tmp_path, method, lora=False, **fields).learning_rate == pytest.approx(METHODS[method].default_lr / 10)


def test_the_registry_is_keyed_by_the_names_the_cli_takes():
    assert list(METHODS) == ["flat", "ga", "graddiff", "npo", "ssd", "salun"]
    assert all(name == method.name for name, method in METHODS.items())
    # a method either takes optimiser steps or changes the model once (SSD)
    assert all(hasattr(method, "apply" if method.one_shot else "step") for method in METHODS.values())
    # the weight-level methods refuse a LoRA adapter
    assert [name for name, method in METHODS.items() if method.full_only] == ["ssd", "salun"]


def test_the_weight_level_methods_are_built_with_their_options(tmp_path):
    run = config(tmp_path, "ssd", retain="r.jsonl", lora=False, alpha=50.0, dampening=0.5)
    assert METHODS["ssd"].from_options(run) == SelectiveSynapticDampening(50.0, 0.5)
    run = config(tmp_path, "salun", retain="r.jsonl", lora=False, saliency=0.2, forget_loss="ga", retain_weight=2.0)
    assert METHODS["salun"].from_options(run) == SaliencyUnlearning(0.2, "ga", 2.0)
    assert run.learning_rate == pytest.approx(METHODS["salun"].default_lr / 10)  # a full fine-tuning rate
