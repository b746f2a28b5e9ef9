"""End to end: `guard bench --suite tiny` on the real engine, classifier and trainer; what CI runs."""

from __future__ import annotations

import json

import pytest

from tests.e2e.benchmarks.bench_cli import run_suite

REQUIRED = ("forget_quality", "model_utility", "forget_rouge_l", "retain_rouge_l", "leak_rate")


@pytest.fixture(scope="module")
def bench(tmp_path_factory, model_dir):
    return run_suite("tiny", tmp_path_factory.mktemp("bench"))


def test_every_method_has_every_metric(bench):
    _, results, stdout = bench
    assert results["suite"] == "tiny" and "suite tiny: 4 methods" in stdout
    assert set(results["methods"]) == {"base", "guard", "flat", "ga"}
    for name, row in results["methods"].items():
        for field in REQUIRED:
            assert isinstance(row[field], float), (name, field, row[field])
    overhead = results["guard_overhead"]
    assert overhead["throughput_ratio"] > 0 and overhead["classifier_ms_p50"] > 0
    assert results["provenance"]["versions"]["vllm"] and results["costs"]["flat"]["seconds"] > 0


def test_the_target_knows_the_forget_set_and_the_guard_takes_it_away(bench):
    methods = bench[1]["methods"]
    assert methods["base"]["leak_rate"] >= 0.75  # the fine-tuned target states its forget facts ...
    assert methods["guard"]["leak_rate"] <= 0.25  # ... the guard withholds them ...
    assert methods["guard"]["retain_rouge_l"] >= 0.8  # ... and keeps the retain facts
    # Detection tells the invented people apart: the forgotten ones by name, the retained ones (the
    # policy's `keep`) left alone, although to a sentence encoder all invented people look alike.
    assert methods["guard"]["forget_unflagged"] == 0.0 and methods["guard"]["retain_flagged"] <= 0.05


def test_report_and_plots_are_written(bench):
    out, results, _ = bench
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in results["methods"])
    for plot in ("forget_vs_utility.png", "leak_rate.png", "throughput.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == results["provenance"]["forget_items"] + results["provenance"]["retain_items"]


@pytest.mark.parametrize(("limit", "expected"), [(None, list(range(10))), (20, list(range(10))),
                                                 (5, [0, 2, 4, 6, 8]), (3, [0, 3, 6])])
def test_the_retain_subset_is_evenly_spaced(limit, expected):
    from benchmarks.items import evenly_spaced

    assert evenly_spaced(range(10), limit) == expected


def test_lora_variants_share_the_targets_engine_and_full_ones_get_their_own(tmp_path):
    from benchmarks.variants import split_variants

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    lora, full = split_variants({"flat": tmp_path / "adapter", "ssd": tmp_path / "checkpoint"})
    assert [v.name for v in lora] == ["flat"] and [v.name for v in full] == ["ssd"]
