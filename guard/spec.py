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
from guard.grammar import check_schema
from guard.policy import MAX_PATTERN_CHARS, MAX_PATTERNS, MIN_FOLDED_PHRASE

EXTRA_ARGS_KEY = "guard"
DEFAULT_PENALTY = 8.0


def compile_patterns(phrases: Iterable[str]) -> tuple[str, ...]:
    """Fold phrases into matcher patterns: one pattern covers every case, spacing, punctuation
    and possessive variant of its phrase ("J.K. Rowling" == "JK Rowling's" == "j. k. rowling")."""
    folded = {fold(p) for p in phrases}
    return tuple(sorted(p for p in folded if len(p) >= MIN_FOLDED_PHRASE))


@dataclass(frozen=True)
class GuardSpec:
    # Every token that would complete one of these is blocked (-inf).
    patterns: tuple[str, ...]
    # A token taking a partial match of a penalised pattern to depth d of n characters gets
    # -penalty * (d / n)^2 (guard.matcher: gentle on a first letter, steep near the end).
    penalty: float = DEFAULT_PENALTY
    # The patterns steered away from before they complete; None: all of them. The safety net on a
    # conversation the classifier did not flag penalises none, so that its answer stays token for
    # token the unguarded one until it approaches a phrase.
    penalised: tuple[str, ...] | None = None
    # Folded leading words of the penalised phrases (guard.name_words.leading_words): with NEAR_MISS_DEPTH,
    # where a penalised partial match is doomed, and so blocked (guard.name_words.doomed_depth).
    leading_words: tuple[str, ...] = ()
    # After a rewind the prompt ends with model output already accepted: the processor replays
    # that many trailing prompt tokens through its matcher so partial matches span the seam.
    replay_tokens: int = 0
    # Tokens banned at the first step of this attempt, where a rewind resumes: how the model rephrases.
    resume_bans: tuple[int, ...] = ()
    # Folded phrases no token may begin, from this attempt's first step on: what the answer was rewound
    # for. A model rewound for "Hogwarts" tends to try it again a word later, or spelt by other tokens,
    # one rewind each; now it must rephrase at once.
    avoid: tuple[str, ...] = ()
    # Folded words of the names blocked inside other words too (guard.name_words.embedded_words): only a
    # token completing one is blocked, wherever in a word it began ("LandhielZephaquist").
    embedded: tuple[str, ...] = ()
    # (token id, penalty <= 0): tokens close in meaning to a forbidden span (guard.semantic).
    semantic: tuple[tuple[int, float], ...] = field(default=())
    # The JSON schema the answer must follow (JSON text; guard.grammar.ANY_OBJECT for any object), or None.
    json_schema: str | None = None

    @property
    def compile_key(self) -> tuple:
        """What the worker compiles a matcher from; requests sharing it share the cache."""
        return (self.patterns, self.penalised, self.penalty, self.semantic, self.leading_words, self.embedded)

    def to_extra_args(self) -> dict[str, Any]:
        return {
            EXTRA_ARGS_KEY: {
                "patterns": list(self.patterns),
                "penalty": self.penalty,
                "penalised": None if self.penalised is None else list(self.penalised),
                "leading_words": list(self.leading_words),
                "replay_tokens": self.replay_tokens,
                "resume_bans": list(self.resume_bans),
                "avoid": list(self.avoid),
                "embedded": list(self.embedded),
                "semantic": [[token_id, penalty] for token_id, penalty in self.semantic],
                **({"json_schema": self.json_schema} if self.json_schema is not None else {}),
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
        penalised = None if fields.penalised is None else tuple(sorted(set(fields.penalised)))
        return cls(tuple(sorted(set(fields.patterns))), fields.penalty, penalised,
                   tuple(sorted(set(fields.leading_words))), fields.replay_tokens,
                   tuple(sorted(set(fields.resume_bans))), tuple(sorted(set(fields.avoid))),
                   tuple(sorted(set(fields.embedded))), tuple(fields.semantic), fields.json_schema)


TokenId = Annotated[StrictInt, Field(ge=0)]
Pattern = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]


class _SpecFields(BaseModel):
    """The wire form of a spec, as `to_extra_args` writes it."""

    model_config = ConfigDict(extra="forbid")

    patterns: list[Annotated[Pattern, Field(min_length=MIN_FOLDED_PHRASE)]] = Field(max_length=MAX_PATTERNS)
    penalty: Annotated[StrictFloat, Field(ge=0, le=100)] = DEFAULT_PENALTY
    penalised: list[StrictStr] | None = None
    leading_words: list[Pattern] = Field(default=[], max_length=MAX_PATTERNS)
    replay_tokens: TokenId = 0
    resume_bans: list[TokenId] = Field(default=[], max_length=MAX_PATTERNS)
    avoid: list[Pattern] = Field(default=[], max_length=MAX_PATTERNS)
    embedded: list[Annotated[Pattern, Field(min_length=MIN_FOLDED_PHRASE)]] = Field(default=[], max_length=MAX_PATTERNS)
    semantic: list[tuple[TokenId, Annotated[StrictFloat, Field(ge=-100, le=0)]]] = []
    json_schema: StrictStr | None = None

    @field_validator("json_schema")
    @classmethod
    def _compiles(cls, schema: str | None) -> str | None:
        if schema is not None:
            check_schema(schema)
        return schema

    @field_validator("patterns", "leading_words", "avoid", "embedded")
    @classmethod
    def _folded(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if fold(pattern) != pattern:
                raise ValueError(f"{pattern!r} is not folded (lowercase letters and digits only)")
        return patterns

    @field_validator("penalised")
    @classmethod
    def _among_patterns(cls, penalised: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if penalised and set(penalised) - set(info.data.get("patterns", ())):
            raise ValueError("must be a subset of patterns")
        return penalised

    @field_validator("resume_bans", "semantic")
    @classmethod
    def _in_vocabulary(cls, entries: list, info: ValidationInfo) -> list:
        vocab_size = (info.context or {}).get("vocab_size")
        ids = entries if info.field_name == "resume_bans" else [entry[0] for entry in entries]
        if vocab_size is not None and any(t >= vocab_size for t in ids):
            raise ValueError(f"token ids must be below the vocabulary size {vocab_size}")
        return entries
