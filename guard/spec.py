"""The per-request guard spec: what travels whole to the engine's worker process.

The logits processor runs in vLLM's worker, so a request carries its spec in
`SamplingParams.extra_args["guard"]` as plain JSON-able data; over HTTP (`vllm_xargs`, whose values
must be flat) as that data in a JSON string. `GuardSpec.from_extra_args` is the one validator, of both: it runs in the API process (vLLM's `validate_params`, answering 400) and again in the
worker, where a bad spec must never raise per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Iterable

from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError,
                      ValidationInfo, field_validator)

from guard.folding import fold
from guard.policy import MIN_FOLDED_PHRASE

EXTRA_ARGS_KEY = "guard"
MAX_PATTERNS = 4096
MAX_PATTERN_CHARS = 128
DEFAULT_PENALTY = 8.0


def compile_patterns(phrases: Iterable[str]) -> tuple[str, ...]:
    """Fold phrases into matcher patterns: one pattern covers every case, spacing, punctuation
    and possessive variant of its phrase ("J.K. Rowling" == "JK Rowling's" == "j. k. rowling")."""
    folded = {fold(p) for p in phrases}
    return tuple(sorted(p for p in folded if len(p) >= MIN_FOLDED_PHRASE))


@dataclass(frozen=True)
class GuardSpec:
    patterns: tuple[str, ...]
    # Logit penalty for a token that takes a partial match to its full length; a token taking it
    # to depth d of n characters gets penalty * d / n (adaptive: deeper means steer harder).
    penalty: float = DEFAULT_PENALTY
    # After a rewind the prompt ends with model output already accepted: the processor replays
    # that many trailing prompt tokens through its matcher so partial matches span the seam.
    replay_tokens: int = 0
    # (output step, token ids) banned at that step: how a rewind makes the model rephrase.
    step_bans: tuple[tuple[int, tuple[int, ...]], ...] = field(default=())
    # (token id, penalty <= 0): tokens close in meaning to a forbidden span (guard.semantic).
    semantic: tuple[tuple[int, float], ...] = field(default=())

    @property
    def compile_key(self) -> tuple:
        """What the worker compiles a matcher from; requests sharing it share the cache."""
        return (self.patterns, self.penalty, self.semantic)

    def to_extra_args(self) -> dict[str, Any]:
        return {
            EXTRA_ARGS_KEY: {
                "patterns": list(self.patterns),
                "penalty": self.penalty,
                "replay_tokens": self.replay_tokens,
                "step_bans": [[step, list(ids)] for step, ids in self.step_bans],
                "semantic": [[token_id, penalty] for token_id, penalty in self.semantic],
            }
        }

    def to_vllm_xargs(self) -> dict[str, str]:
        """The spec as `vllm serve` takes it in a request's `vllm_xargs` (flat values only)."""
        return {EXTRA_ARGS_KEY: json.dumps(self.to_extra_args()[EXTRA_ARGS_KEY], separators=(",", ":"))}

    @classmethod
    def from_extra_args(cls, extra_args: dict[str, Any] | None, vocab_size: int | None = None) -> "GuardSpec | None":
        """The spec of a request, None when it is not guarded; ValueError names the bad field."""
        raw = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if raw is None:
            return None
        if isinstance(raw, str):  # vllm_xargs over HTTP
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ValueError(f"{EXTRA_ARGS_KEY}: not valid JSON") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{EXTRA_ARGS_KEY}: must be an object")
        try:
            fields = _SpecFields.model_validate(raw, context={"vocab_size": vocab_size})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (EXTRA_ARGS_KEY, *error["loc"]))
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            raise ValueError(f"{where}: {message.removeprefix('Value error, ')}") from None
        return cls(
            tuple(sorted(set(fields.patterns))), fields.penalty, fields.replay_tokens,
            tuple((step, tuple(ids)) for step, ids in fields.step_bans), tuple(fields.semantic),
        )


TokenId = Annotated[StrictInt, Field(ge=0)]


class _SpecFields(BaseModel):
    """The wire form of a spec, as `to_extra_args` writes it."""

    model_config = ConfigDict(extra="forbid")

    patterns: list[Annotated[StrictStr, Field(min_length=MIN_FOLDED_PHRASE, max_length=MAX_PATTERN_CHARS)]] = Field(
        max_length=MAX_PATTERNS)
    penalty: Annotated[StrictFloat, Field(ge=0, le=100)] = DEFAULT_PENALTY
    replay_tokens: TokenId = 0
    step_bans: list[tuple[TokenId, list[TokenId]]] = []
    semantic: list[tuple[TokenId, Annotated[StrictFloat, Field(ge=-100, le=0)]]] = []

    @field_validator("patterns")
    @classmethod
    def _folded(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if fold(pattern) != pattern:
                raise ValueError(f"{pattern!r} is not folded (lowercase letters and digits only)")
        return patterns

    @field_validator("step_bans", "semantic")
    @classmethod
    def _in_vocabulary(cls, entries: list, info: ValidationInfo) -> list:
        vocab_size = (info.context or {}).get("vocab_size")
        ids = [t for entry in entries for t in (entry[1] if info.field_name == "step_bans" else [entry[0]])]
        if vocab_size is not None and any(t >= vocab_size for t in ids):
            raise ValueError(f"token ids must be below the vocabulary size {vocab_size}")
        return entries
