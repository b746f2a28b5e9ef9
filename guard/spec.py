"""The per-request guard spec: what travels whole to the engine's worker process.

The logits processor runs in vLLM's worker, so a request carries its spec in
`SamplingParams.extra_args["guard"]` as plain JSON-able data. `GuardSpec.from_extra_args` is the one
validator: it runs in the API process (vLLM's `validate_params`, answering 400) and again in the
worker, where a bad spec must never raise per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

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

    @classmethod
    def from_extra_args(cls, extra_args: dict[str, Any] | None, vocab_size: int | None = None) -> "GuardSpec | None":
        """The spec of a request, None when it is not guarded; ValueError names the bad field."""
        raw = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValueError(f"{EXTRA_ARGS_KEY}: must be an object")
        unknown = set(raw) - {"patterns", "penalty", "replay_tokens", "step_bans", "semantic"}
        if unknown:
            raise ValueError(f"{EXTRA_ARGS_KEY}: unknown field(s) {sorted(unknown)}")
        patterns = raw.get("patterns")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"{EXTRA_ARGS_KEY}.patterns: must be a list of strings")
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"{EXTRA_ARGS_KEY}.patterns: at most {MAX_PATTERNS} patterns")
        for pattern in patterns:
            if fold(pattern) != pattern or not MIN_FOLDED_PHRASE <= len(pattern) <= MAX_PATTERN_CHARS:
                raise ValueError(
                    f"{EXTRA_ARGS_KEY}.patterns: {pattern!r} is not a folded pattern of "
                    f"{MIN_FOLDED_PHRASE}-{MAX_PATTERN_CHARS} lowercase letters/digits"
                )
        penalty = raw.get("penalty", DEFAULT_PENALTY)
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 <= penalty <= 100:
            raise ValueError(f"{EXTRA_ARGS_KEY}.penalty: must be a number in [0, 100]")
        replay = raw.get("replay_tokens", 0)
        if isinstance(replay, bool) or not isinstance(replay, int) or replay < 0:
            raise ValueError(f"{EXTRA_ARGS_KEY}.replay_tokens: must be a non-negative integer")
        step_bans = []
        for entry in raw.get("step_bans", []):
            if (
                not isinstance(entry, (list, tuple))
                or len(entry) != 2
                or not _is_index(entry[0])
                or not isinstance(entry[1], (list, tuple))
                or not all(_is_index(t) and (vocab_size is None or t < vocab_size) for t in entry[1])
            ):
                raise ValueError(f"{EXTRA_ARGS_KEY}.step_bans: entries must be [step, [token ids in the vocabulary]]")
            step_bans.append((entry[0], tuple(entry[1])))
        semantic = []
        for entry in raw.get("semantic", []):
            if (
                not isinstance(entry, (list, tuple))
                or len(entry) != 2
                or not _is_index(entry[0])
                or (vocab_size is not None and entry[0] >= vocab_size)
                or isinstance(entry[1], bool)
                or not isinstance(entry[1], (int, float))
                or not -100 <= entry[1] <= 0
            ):
                raise ValueError(f"{EXTRA_ARGS_KEY}.semantic: entries must be [token id, penalty in [-100, 0]]")
            semantic.append((entry[0], float(entry[1])))
        return cls(tuple(sorted(set(patterns))), float(penalty), replay, tuple(step_bans), tuple(semantic))


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
