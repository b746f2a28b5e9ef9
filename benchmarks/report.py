"""`report.md` and its PNG plots from a benchmark's `results.json` (schema: docs/benchmarks.md#resultsjson).

    python -m benchmarks.report RESULTS_JSON [--out DIR]    (default DIR: the file's folder)

Plots are drawn on matplotlib's non-interactive Agg canvas (no display, no pyplot global state).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# The methods table's columns, in this order; other numeric fields of a method follow them.
METRICS = ["forget_quality", "model_utility", "forget_rouge_l", "retain_rouge_l", "forget_prob", "retain_prob",
           "truth_ratio", "retain_truth_ratio", "leak_rate", "tokens_per_s", "n_forget", "n_retain"]
MISSING = "–"
TINY_P = 1e-300  # a p-value of 0 is drawn here on the log axis


def fmt(value) -> str:
    """A table cell: floats to 3 significant digits (1234.5 -> "1230", 2.2e-07 stays), other values
    as they are, None as "–"."""
    if value is None:
        return MISSING
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.3g}"
    return f"{float(text):.0f}" if "e+" in text else text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _columns(methods: dict[str, dict]) -> list[str]:
    present = {key for scores in methods.values() for key in scores}
    extra = [key for scores in methods.values() for key, value in scores.items()
             if key not in METRICS and (value is None or isinstance(value, (int, float)))]
    return [m for m in METRICS if m in present] + list(dict.fromkeys(extra))


def _markdown(results: dict, plots: list[Path]) -> str:
    methods = results.get("methods", {})
    lines = [f"# GUARD benchmark: {results.get('suite', '?')}", ""]
    header = {"suite": results.get("suite", "?"), "model": results.get("model", "?"), **results.get("provenance", {})}
    lines += [f"- {key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in header.items()]
    columns = _columns(methods)
    lines += ["", "## Methods", ""]
    lines += _table(["method"] + columns,
                    [[name] + [fmt(scores.get(c)) for c in columns] for name, scores in methods.items()])
    if overhead := results.get("guard_overhead"):
        lines += ["", "## Guard overhead", ""]
        lines += _table(["measure", "value"], [[key, fmt(value)] for key, value in overhead.items()])
    if costs := results.get("costs"):
        lines += ["", "## Cost to produce each variant", ""]
        other = list(dict.fromkeys(key for cost in costs.values() for key in cost if key != "seconds"))
        lines += _table(["method", "wall-clock seconds", *other],
                        [[name, *(fmt(cost.get(key)) for key in ["seconds", *other])] for name, cost in costs.items()])
    if plots:
        lines += ["", "## Plots"]
        for path in plots:
            lines += ["", f"![{path.stem.replace('_', ' ')}]({path.name})"]
    return "\n".join(lines) + "\n"


# -- plots ----------------------------------------------------------------------------------
def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _forget_vs_utility(methods: dict[str, dict], path: Path) -> Path | None:
    """Scatter of model utility (x) against forget quality (y, log: p-values), one labelled point
    per method (methods without a value are left out); against forget ROUGE-L instead when no
    method has a forget quality."""
    use_fq = any(s.get("forget_quality") is not None for s in methods.values())
    y_key = "forget_quality" if use_fq else "forget_rouge_l"
    at: dict[tuple[float, float], list[str]] = {}  # methods at the same point share one label
    for name, s in methods.items():
        if s.get("model_utility") is not None and s.get(y_key) is not None:
            at.setdefault((s["model_utility"], s[y_key]), []).append(name)
    points = [(", ".join(names), x, y) for (x, y), names in at.items()]
    if not points:
        return None
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for name, x, y in points:
        y = max(y, TINY_P) if use_fq else y
        ax.scatter(x, y)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("model utility")
    if use_fq:
        ax.set_yscale("log")
        ax.set_ylabel("forget quality (KS p-value, log)")
    else:
        ax.set_ylabel("forget ROUGE-L (lower = more forgotten)")
    ax.set_title("Forgetting vs utility")
    return _save(fig, path)


def _bars(names: list[str], values: list[float], ylabel: str, title: str, path: Path) -> Path:
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 2), 4))
    ax = fig.add_subplot()
    ax.bar(names, values)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


def _leak_rate(methods: dict[str, dict], path: Path) -> Path | None:
    rates = {name: s["leak_rate"] for name, s in methods.items() if s.get("leak_rate") is not None}
    if not rates:
        return None
    return _bars(list(rates), list(rates.values()), "leak rate (share of forget answers)", "Leak rate", path)


RESTOR = ("recovery_rate", "corruption_forgotten", "utility")


def _recovery(methods: dict[str, dict], path: Path) -> Path | None:
    """RESTOR's three shares side by side, one group of bars per method."""
    names = [name for name, s in methods.items() if any(s.get(key) is not None for key in RESTOR)]
    if not names:
        return None
    fig = Figure(figsize=(max(5.0, 1.1 * len(names) + 2), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(RESTOR)
    for k, key in enumerate(RESTOR):
        ax.bar([i + (k - 1) * width for i in range(len(names))],
               [methods[name].get(key) or 0.0 for name in names], width, label=key.replace("_", " "))
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of facts")
    ax.set_title("Recovery from corruption (RESTOR)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _throughput(overhead: dict, path: Path) -> Path | None:
    if overhead.get("plain_tokens_per_s") is None or overhead.get("guarded_tokens_per_s") is None:
        return None
    return _bars(["plain", "guarded"], [overhead["plain_tokens_per_s"], overhead["guarded_tokens_per_s"]],
                 "tokens / s", "Decode throughput", path)


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Write `report.md` and the plots that the results have data for (`forget_vs_utility.png`,
    `leak_rate.png`, `throughput.png`, `recovery.png`) into `out_dir`; returns the paths written,
    report first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = results.get("methods", {})
    plots = [path for path in (
        _forget_vs_utility(methods, out_dir / "forget_vs_utility.png"),
        _leak_rate(methods, out_dir / "leak_rate.png"),
        _throughput(results.get("guard_overhead") or {}, out_dir / "throughput.png"),
        _recovery(methods, out_dir / "recovery.png"),
    ) if path is not None]
    report = out_dir / "report.md"
    report.write_text(_markdown(results, plots), encoding="utf-8")
    return [report, *plots]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results.json")
    parser.add_argument("--out", type=Path, help="output folder (default: the results file's folder)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    for path in write_report(results, args.out or args.results.parent):
        print(path)


if __name__ == "__main__":
    main()
