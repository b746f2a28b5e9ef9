"""`guard bench --suite restor-tiny` end to end on the real engine (RESTOR's data and scores: tests/unit)."""

from __future__ import annotations

import pytest

from tests.e2e.benchmarks.bench_cli import run_suite


@pytest.fixture(scope="module")
def restor_tiny(tmp_path_factory, model_dir):
    return run_suite("restor-tiny", tmp_path_factory.mktemp("restor"))


def test_restor_tiny_scores_every_method_and_writes_its_report(restor_tiny):
    out, results, stdout = restor_tiny
    methods = results["methods"]
    assert "suite restor-tiny: 5 methods" in stdout
    assert set(methods) == {"clean", "corrupted", "guard", "flat", "ga"}
    # the corruption took: facts the clean model stated are overwritten, and the clean model is the ceiling
    assert methods["clean"]["n_overwritten"] >= 4
    assert methods["clean"]["recovery_rate"] == 1.0 and methods["corrupted"]["recovery_rate"] == 0.0
    assert methods["corrupted"]["corruption_forgotten"] == 0.0
    for name in ("guard", "flat", "ga"):
        for key in ("recovery_rate", "corruption_forgotten", "utility"):
            assert 0.0 <= methods[name][key] <= 1.0, (name, key)
    # the guard withholds the wrong answers it was given
    assert methods["guard"]["corruption_forgotten"] >= 0.75
    assert results["costs"]["flat"]["kind"] == "training (LoRA)" and results["costs"]["flat"]["seconds"] > 0
    assert (out / "recovery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(f"| {name} |" in (out / "report.md").read_text() for name in methods)
