"""The settings of one unlearning run, validated before anything is loaded or trained."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unlearning.losses import DIVERGENCES
from unlearning.methods import METHODS


class UnlearnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(description=", ".join(METHODS))
    forget: Path = Field(description="JSONL of {question, answer} or {text} to forget")
    out: Path = Field(description="folder for the variant (adapter or checkpoint + card)")
    divergence: str | None = Field(default=None, description="FLAT's f-divergence: kl (default), js, tv or pearson")
    retain: Path | None = Field(default=None, description="JSONL of {question, answer} or {text} to keep (graddiff, ssd, salun)")
    model: str | None = Field(default=None, description="base model: bundled default, a Hugging Face id, or a "
                                                        "local folder")
    lora: bool = Field(default=True, json_schema_extra={"flag": "--full"},
                       description="full fine-tuning instead of a LoRA adapter")
    merge: bool = Field(default=False, description="merge the LoRA adapter into the weights and write a full "
                                                   "checkpoint (served at the base model's speed, by an engine of "
                                                   "its own)")
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: float = Field(default=16.0, gt=0)
    lr: float | None = Field(default=None, gt=0, le=1, description="learning rate (default: per method)")
    epochs: float = Field(default=5.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    warmup_steps: int = Field(default=2, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_length: int = Field(default=256, ge=16, description="tokens per example")
    beta: float = Field(default=0.1, gt=0, description="NPO's inverse temperature")
    retain_weight: float = Field(default=1.0, ge=0, description="GradDiff's weight of the retain loss")
    alpha: float = Field(default=10.0, gt=0, description="SSD: dampen the parameters more than this many times as "
                                                         "important to the forget data as to the retain data")
    dampening: float = Field(default=1.0, gt=0, json_schema_extra={"flag": "--lambda"},
                             description="SSD's lambda: a selected parameter is scaled by lambda * I_retain / "
                                         "I_forget, never above 1")
    saliency: float = Field(default=0.5, gt=0, le=1, description="SalUn: the share of parameters trained, those "
                                                                  "with the largest forget-loss gradient")
    forget_loss: Literal["random", "ga"] = Field(default="random", description="SalUn's forget term: random "
                                                 "(retain answers as labels) or ga (gradient ascent)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto (bf16 autocast where the hardware has bf16), bf16 or fp32")
    seed: int = 0
    overwrite: bool = Field(default=False, description="replace a non-empty --out folder")

    @model_validator(mode="after")
    def _consistent(self) -> "UnlearnConfig":
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; known: {', '.join(METHODS)}")
        if self.divergence is not None:
            if self.method != "flat":
                raise ValueError(f"divergence: applies to --method flat only, not {self.method}")
            if self.divergence not in DIVERGENCES:
                raise ValueError(f"divergence: unknown {self.divergence!r}; known: {', '.join(DIVERGENCES)}")
        method = METHODS[self.method]
        needs_retain = "retain" in method.roles
        if needs_retain and self.retain is None:
            raise ValueError(f"retain: --method {self.method} needs --retain FILE")
        if not needs_retain and self.retain is not None:
            users = ", ".join(name for name, m in METHODS.items() if "retain" in m.roles)
            raise ValueError(f"retain: --method {self.method} does not use retain data ({users} do)")
        if method.full_only and self.lora:
            raise ValueError(f"lora: --method {self.method} changes the model's own weights, not an adapter: "
                             "pass --full")
        if self.merge and not self.lora:
            raise ValueError("merge: merges a LoRA adapter; --full already writes a checkpoint")
        if self.method == "salun" and self.weight_decay:
            raise ValueError("weight_decay: --method salun trains its saliency mask only, and weight decay would "
                             "move every weight")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} is a file, not a folder")
        if self.out.exists() and any(self.out.iterdir()) and not self.overwrite:
            raise ValueError(f"out: {self.out} is not empty (pass --overwrite to replace it)")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return METHODS[self.method].default_lr * (1.0 if self.lora else 0.1)

    def use_bf16(self, device: str) -> bool:
        """bf16 autocast where the hardware does bf16: a CUDA GPU, or a CPU with AVX512-BF16/AMX.
        Elsewhere autocast emulates it: on this project's 2-core AVX2 CPU a forward and backward pass
        took 41 s under bf16 autocast against 2 s in fp32."""
        if self.precision != "auto":
            return self.precision == "bf16"
        if device == "cuda":
            import torch

            return torch.cuda.is_bf16_supported()
        return _cpu_has_bf16()

    @property
    def flat_divergence(self) -> str:
        return self.divergence or "kl"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
