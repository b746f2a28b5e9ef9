"""Where a suite's results come from: the versions of the libraries that made them, and the machine."""

from __future__ import annotations

import platform


def environment() -> dict:
    """{versions: torch, transformers, vllm; machine; processor; python}, for results.json's provenance."""
    import torch  # the heavy libraries: only when a run has finished
    import transformers
    import vllm

    return {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "vllm": vllm.__version__},
            "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}
