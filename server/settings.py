"""The settings of `guard serve` and `guard proxy`, validated once at start-up: one model per command,
from which the command-line options (cli.flags), the environment variables (`GUARD_` and the field's
name: GUARD_MAX_REWINDS, GUARD_API_KEYS) and the defaults all come."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Sequence

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.restrictions import GuardOptions
from server.engines.variants import parse_variant

_ENV_ONLY = {"flag": None}  # a secret: from the environment, never on a command line others can read


def upstream_urls(urls: str | Sequence[str]) -> list[str]:
    """`--upstream`'s URLs: one, or several comma-separated."""
    listed = urls.split(",") if isinstance(urls, str) else list(urls)
    return [url.strip().rstrip("/") for url in listed if url.strip()]


class Enforcement(StrEnum):
    """How the proxy guards its upstream (README, "Proxy"); AUTO: the strongest the upstream allows."""
    AUTO = "auto"
    FULL = "full"  # the upstream runs the guard's logits processor
    BIAS = "bias"  # logit_bias (needs the tokenizer), and the output filter
    FILTER = "filter"  # the output filter alone


class GuardSettings(BaseSettings, GuardOptions):
    """What `guard serve` and `guard proxy` share: where they listen and how they guard (the guard's
    own options: runtime.restrictions.GuardOptions)."""
    model_config = SettingsConfigDict(env_prefix="GUARD_", extra="forbid", frozen=True)

    policy: Path | None = Field(default=None, description="policy YAML: the targets to forget (seeds an empty "
                                                          "--state-dir; edits of it while serving are new versions)")
    state_dir: Path | None = Field(default=None, description="folder for the policy store (SQLite): run-time "
                                                             "targets survive restarts; none: kept in memory")
    state_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://", description=(
        "PostgreSQL URL of a policy store shared by replicas on many hosts (postgresql://USER:PASSWORD@HOST/DB); "
        "they hear of each other's changes at once (LISTEN/NOTIFY); instead of --state-dir"))
    reload_seconds: float = Field(default=1.0, ge=0, description="how often the store and the policy file are checked")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_rewinds: int = Field(default=6, ge=0, le=32, description="rephrasings per answer before it is cut")
    max_request_seconds: float = Field(default=300.0, gt=0, description="longest time a whole answer may take")
    max_request_bytes: int = Field(default=8 * 2**20, ge=1024,
                                   description="largest request body accepted (larger: 413 before it is parsed)")
    rate_limit_rpm: int = Field(default=0, ge=0, description="requests per minute per API key (0: no limit); with "
                                "--state-url, for all replicas together")
    rate_limit_tpm: int = Field(default=0, ge=0, description="completion tokens asked for per minute per API key "
                                "(0: no limit); with --state-url, for all replicas together")
    audit_log: Path | None = Field(default=None, description="file for the audit log: a JSON line per restricted "
                                                             "request (rotated)")
    audit_text: bool = Field(default=False, description="include prompt and answer text in the audit log")
    tool_call_parser: str | None = Field(default=None, description="vLLM's parser of the model's tool-call format "
                                         "(as `vllm serve --tool-call-parser`, e.g. hermes): needed for "
                                         "`tool_choice: auto`, the default where tools are given")
    api_keys: SecretStr | None = Field(default=None, json_schema_extra=_ENV_ONLY,
                                       description="users' API keys, comma-separated (none: every route is open)")
    admin_keys: SecretStr | None = Field(default=None, json_schema_extra=_ENV_ONLY,
                                         description="admins' API keys, comma-separated (/v1/forget, /metrics)")

    @property
    def keys(self) -> tuple[str | None, str | None]:
        """(users' keys, admins' keys), as given."""
        return tuple(k.get_secret_value() if k else None for k in (self.api_keys, self.admin_keys))

    @model_validator(mode="after")
    def _one_store(self):
        if self.state_dir is not None and self.state_url is not None:
            raise ValueError("state_url: give --state-url or --state-dir, not both")
        return self

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
    model: str | None = Field(default=None, description="the bundled default (none), a Hugging Face id, or a "
                                                        "local checkpoint folder")
    served_model_name: str | None = Field(default=None, description="model name clients send (default: the "
                                                                    "model's name)")
    max_model_len: int = Field(default=2048, ge=64)
    kv_cache_gib: int = Field(default=1, ge=1, description="KV cache size on CPU (whole GiB)")
    block_size: int | None = Field(default=None, ge=1, description="KV-cache block in tokens, the prefix cache's "
                                   "granularity (a rewind re-prefills from the last full block); default: 32 on a "
                                   "CPU, vLLM's own elsewhere")
    enforce_eager: bool = Field(default=False, description="run the model eagerly, as `vllm serve --enforce-eager`: "
                                "a faster first start, but answers that may differ from vLLM's default (compiled) ones")
    variants: dict[str, Path] = Field(default={}, json_schema_extra={"flag": "--variant", "append": True},
                                      description="serve an unlearned variant (LoRA adapter or checkpoint) as NAME "
                                                  "and NAME+guard")

    @field_validator("variants", mode="before")
    @classmethod
    def _named_paths(cls, given):
        """`NAME=PATH`, each as the command line gives it, or a mapping."""
        return dict(parse_variant(text) for text in given) if isinstance(given, list) else given


class ProxySettings(GuardSettings):
    """`guard proxy`: the guard in front of an OpenAI-compatible server that someone else runs."""
    upstream: str = Field(description="the upstream's OpenAI base URL, e.g. http://host:8000/v1; several serving "
                                      "the same model, comma-separated: the proxy spreads requests over them")
    upstream_api_key: SecretStr | None = Field(default=None, description="bearer token for the upstream (better: "
                                                                         "GUARD_UPSTREAM_API_KEY)")
    enforcement: Enforcement = Field(
        default=Enforcement.AUTO, description="full (upstream runs the guard's logits processor), bias (logit_bias; needs the "
                                    "tokenizer), filter (output filter only) or auto: the strongest the upstream allows")
    tokenizer: str | None = Field(default=None, description="the upstream model's tokenizer (default: its model id, "
                                                            "if a local folder)")
    max_logit_bias: int = Field(default=300, ge=1, le=100_000, description="bias level: logit_bias entries per "
                                                                          "request (OpenAI: 300)")
    retry_on_leak: bool = Field(default=False, description="bias level: ask a whole answer cut by the filter once "
                                                           "more, fully biased")
    upstream_timeout: float = Field(default=30.0, gt=0, le=600, description="longest wait for any byte, seconds")
    upstream_wait: float = Field(default=120.0, ge=0, description="at start-up: how long to wait for the upstream")

    @property
    def upstream_key(self) -> str | None:
        return self.upstream_api_key.get_secret_value() if self.upstream_api_key else None

    @field_validator("upstream")
    @classmethod
    def _http_urls(cls, given: str) -> str:
        urls = upstream_urls(given)
        for url in urls or [""]:
            if not url.startswith(("http://", "https://")) or not url.split("://", 1)[1]:
                raise ValueError("must be http:// or https:// URLs, e.g. http://host:8000/v1 (several: comma-separated)")
        if len(set(urls)) < len(urls):
            raise ValueError("names an upstream twice")
        return ",".join(urls)
