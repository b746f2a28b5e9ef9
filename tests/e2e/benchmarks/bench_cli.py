"""Running `guard bench` as a user does, in a subprocess, for the end-to-end suite tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_suite(suite: str, out: Path) -> tuple[Path, dict, str]:
    """(out, results.json, stdout) of `guard bench --suite SUITE --out OUT`; fails on a non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "cli.main", "bench", "--suite", suite, "--out", str(out)],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), done.stdout
