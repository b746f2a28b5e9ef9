"""Server settings, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from runtime.restrictions import GuardOptions


class GuardSettings(GuardOptions):
    """What `guard serve` and `guard proxy` share: where they listen and how they guard (the guard's
    own options: runtime.restrictions.GuardOptions)."""

    policy: Path | None = None  # seeds an empty policy store; edits of it while serving are new versions
    state_dir: Path | None = None  # the policy store (SQLite); None: in memory, run-time changes are lost
    reload_seconds: float = Field(default=1.0, ge=0)  # how often the store and the policy file are checked
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_rewinds: int = Field(default=6, ge=0, le=32)  # rephrasings per request before truncating
    max_request_seconds: float = Field(default=300.0, gt=0)
    max_request_bytes: int = Field(default=8 * 2**20, ge=1024)  # larger bodies: 413, before they are parsed
    rate_limit_rpm: int = Field(default=0, ge=0)  # requests per minute per API key; 0: no limit
    rate_limit_tpm: int = Field(default=0, ge=0)  # completion tokens asked for, per minute per API key; 0: no limit
    audit_log: Path | None = None  # JSON lines, one per restricted request; None: no audit log
    audit_text: bool = False  # include prompt and answer text in the audit records
    tool_call_parser: str | None = None  # vLLM's parser of the model's tool-call format; None: `auto` is refused

    @field_validator("tool_call_parser")
    @classmethod
    def _known_parser(cls, name: str | None) -> str | None:
        if name is not None:
            from vllm.tool_parsers import ToolParserManager

            if name not in (known := ToolParserManager.list_registered()):
                raise ValueError(f"{name!r} is not one of vLLM's tool-call parsers: {', '.join(sorted(known))}")
        return name


class Settings(GuardSettings):
    """`guard serve`: the guard around its own vLLM engine."""
    model: str | None = None  # None: the bundled default model
    served_model_name: str | None = None  # name in /v1/models; default: the model's name
    max_model_len: int = Field(default=2048, ge=64)
    kv_cache_gib: int = Field(default=1, ge=1)  # VLLM_CPU_KVCACHE_SPACE takes whole GiB
    enforce_eager: bool = False  # vLLM's default: compiled (cached after a model's first start), as `vllm serve`
    variants: dict[str, Path] = {}  # name -> LoRA adapter or checkpoint folder, served beside the model


class ProxySettings(GuardSettings):
    """`guard proxy`: the guard in front of an OpenAI-compatible server that someone else runs."""
    upstream: str  # the upstream's OpenAI base URL, e.g. http://host:8000/v1
    upstream_api_key: str | None = None  # sent to the upstream as a bearer token
    enforcement: Literal["auto", "full", "bias", "filter"] = "auto"
    tokenizer: str | None = None  # the upstream model's tokenizer (name or folder); default: its model id if a folder
    max_logit_bias: int = Field(default=300, ge=1, le=100_000)  # bias level: entries per request (OpenAI: 300)
    retry_on_leak: bool = False  # bias level: a whole answer cut by the filter is asked again, fully biased
    upstream_timeout: float = Field(default=30.0, gt=0, le=600)  # the longest wait for any byte
    upstream_wait: float = Field(default=120.0, ge=0)  # at start-up: how long to wait for the upstream

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or not url.split("://", 1)[1]:
            raise ValueError("must be an http:// or https:// URL, e.g. http://host:8000/v1")
        return url.rstrip("/")
