"""The model card of an unlearned variant: what was done to which model with which data (JSON + Markdown)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from runtime.models import model_provenance
from guard.files import file_sha256

CARD_JSON = "unlearn-card.json"
CARD_MARKDOWN = "README.md"
KINDS = {"lora": "LoRA adapter", "full": "full checkpoint",
         "merged": "full checkpoint (a LoRA adapter merged into the weights)"}


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def build(config, model_path: str, forget_examples: int, retain_examples: int, summary,
          losses: list[float]) -> dict:
    data = {"forget": {"path": str(config.forget), "sha256": file_sha256(config.forget), "examples": forget_examples}}
    if config.retain:
        data["retain"] = {"path": str(config.retain), "sha256": file_sha256(config.retain), "examples": retain_examples}
    hyperparameters = config.model_dump(mode="json", exclude={"method", "divergence", "forget", "retain", "out",
                                                              "model", "overwrite"})
    if summary.steps:
        hyperparameters["lr"] = config.learning_rate
    else:  # a one-shot method (SSD) takes no optimiser steps
        for name in ("lr", "epochs", "max_steps", "grad_accum", "warmup_steps", "weight_decay"):
            hyperparameters.pop(name)
    return {
        "method": config.method,
        "divergence": config.flat_divergence if config.method == "flat" else None,
        "kind": summary.kind,
        "precision": summary.precision,
        "base_model": {"name": config.model or "smollm2-135m-instruct", "path": model_path,
                       **model_provenance(model_path)},
        "hyperparameters": hyperparameters,
        "data": data,
        "results": {"steps": summary.steps, "seconds": summary.seconds, "first_loss": summary.first_loss,
                    "last_loss": summary.last_loss, "forget_prob_before": summary.forget_prob_before,
                    "forget_prob_after": summary.forget_prob_after, "losses": [round(x, 6) for x in losses],
                    "selected": summary.selected},
        "versions": {p: _version(p) for p in ("guard-unlearning", "torch", "transformers", "peft")},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write(folder: Path, content: dict) -> None:
    (folder / CARD_JSON).write_text(json.dumps(content, indent=2) + "\n")
    (folder / CARD_MARKDOWN).write_text(markdown(content))


def read(folder: Path) -> dict | None:
    path = Path(folder) / CARD_JSON
    return json.loads(path.read_text()) if path.exists() else None


def markdown(content: dict) -> str:
    results, data = content["results"], content["data"]
    method = content["method"] + (f" ({content['divergence']})" if content["divergence"] else "")
    lines = [
        f"# Unlearned variant: {method}",
        "",
        f"Base model: `{content['base_model']['name']}`"
        + (f" (GGUF sha256 `{content['base_model']['gguf_sha256']}`)" if "gguf_sha256" in content["base_model"] else ""),
        f"Kind: {KINDS[content['kind']]}, created {content['created']}.",
        "",
        "| | |",
        "|---|---|",
        f"| steps | {results['steps']} ({results['seconds']} s) |",
    ]
    if results["first_loss"] is not None:
        lines.append(f"| loss, first -> last step | {results['first_loss']:.4f} -> {results['last_loss']:.4f} |")
    if results["selected"] is not None:  # SSD dampens its selection; SalUn trains its saliency mask
        lines.append(f"| parameters {'trained (saliency mask)' if results['steps'] else 'dampened'} | "
                     f"{100 * results['selected']:.2f}% |")
    lines.append(f"| forget answers' token probability, before -> after | "
                 f"{results['forget_prob_before']:.3f} -> {results['forget_prob_after']:.3f} |")
    for role, info in data.items():
        lines.append(f"| {role} data | {info['examples']} examples, `{info['path']}`, sha256 `{info['sha256'][:16]}...` |")
    lines += ["", "Hyperparameters:", "", "```json", json.dumps(content["hyperparameters"], indent=2), "```", ""]
    return "\n".join(lines)
