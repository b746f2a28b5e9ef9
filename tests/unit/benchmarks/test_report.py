"""report.md and the PNG plots from a fake results dict."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import fmt, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def method(fq, mu, leak, **extra) -> dict:
    return {"forget_quality": fq, "model_utility": mu, "forget_rouge_l": 0.4, "retain_rouge_l": 0.8,
            "forget_prob": 0.3, "truth_ratio": 0.6, "leak_rate": leak, "tokens_per_s": None, **extra}


RESULTS = {
    "suite": "tiny", "model": {"base": "SmolLM2-135M-Instruct", "target": "/cache/target"},
    "methods": {"target": method(1e-5, 0.61, 0.9), "guard": method(0.42, 0.6, 0.05, tokens_per_s=151.234),
                "flat": method(None, 0.5, 0.3)},
    "guard_overhead": {"throughput_ratio": 0.951, "ttft_ms_added": 12.5, "classifier_ms_p50": 3.1,
                       "plain_tokens_per_s": 160.0, "guarded_tokens_per_s": 152.2},
    "costs": {"guard": {"seconds": 0.8}, "flat": {"seconds": 312.0, "kind": "training (LoRA)"}},
    "provenance": {"model_sha256": "abc123", "seed": 0},
}


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_report_has_a_row_per_method_and_valid_plots(tmp_path):
    paths = write_report(RESULTS, tmp_path)
    names = [p.name for p in paths]
    assert names == ["report.md", "forget_vs_utility.png", "leak_rate.png", "throughput.png"]
    assert all(is_png(p) for p in paths[1:])
    text = (tmp_path / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for name in RESULTS["methods"]:
        assert any(row.startswith(f"| {name} |") for row in rows)
    assert "| flat | – | 0.5 |" in text  # None as "–", 3 significant digits
    assert "151" in text and "1e-05" in text
    assert "| throughput_ratio | 0.951 |" in text and "| flat | 312 | training (LoRA) |" in text  # overhead and costs
    assert "SmolLM2-135M-Instruct" in text and "model_sha256: abc123" in text
    for png in names[1:]:
        assert f"]({png})" in text  # embedded with relative links


def test_report_without_forget_quality_or_throughput(tmp_path):
    results = {"suite": "known", "model": "m",
               "methods": {"target": method(None, 0.6, 0.9), "guard": method(None, 0.58, 0.1)},
               "guard_overhead": {"throughput_ratio": None}}
    paths = write_report(results, tmp_path)
    assert [p.name for p in paths] == ["report.md", "forget_vs_utility.png", "leak_rate.png"]
    assert all(is_png(p) for p in paths[1:])
    assert "| throughput_ratio | – |" in (tmp_path / "report.md").read_text()


def test_fmt():
    assert [fmt(None), fmt(0.123456), fmt(1234.5), fmt(200), fmt(2.2e-7)] == ["–", "0.123", "1230", "200", "2.2e-07"]
