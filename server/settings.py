"""Server settings, validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # None: the bundled default model
    served_model_name: str | None = None  # name in /v1/models; default: the model's name
    policy: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_model_len: int = Field(default=2048, ge=64)
    kv_cache_gib: int = Field(default=1, ge=1)  # VLLM_CPU_KVCACHE_SPACE takes whole GiB
    enforce_eager: bool = True  # CPU: torch.compile costs a minute at every start for little gain
    penalty: float = Field(default=8.0, ge=0, le=100)  # adaptive penalty strength (logits)
    max_rewinds: int = Field(default=6, ge=0, le=32)  # rephrasings per request before truncating
    max_request_seconds: float = Field(default=300.0, gt=0)
    classifier: bool = True  # False: every target restricts every request
    encoder: str = "all-MiniLM-L6-v2"  # sentence-transformers model of the prompt classifier
    target_fpr: float = Field(default=0.01, gt=0, lt=0.5)  # classifier threshold calibration
    variants: dict[str, Path] = {}  # name -> LoRA adapter or checkpoint folder, served beside the model
    reload_seconds: float = Field(default=2.0, ge=0)  # policy file check interval; 0 = never reload
