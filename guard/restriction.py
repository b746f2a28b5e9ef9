"""From a policy to what one request is restricted by.

`Restrictions.for_conversation` decides which targets a conversation touches and returns the
compiled spec (for the engine) and the leak detector (for the output stream) of exactly those
targets. Until the prompt classifier exists every target applies to every request; compiled
restrictions are cached per set of targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from guard.leaks import LeakDetector
from guard.policy import Policy, Target
from guard.spec import GuardSpec, compile_patterns


@dataclass(frozen=True)
class Restriction:
    target_ids: tuple[str, ...]
    spec: GuardSpec | None  # None: nothing to restrict, the plain path
    detector: LeakDetector | None


def forbidden_phrases(target: Target) -> list[str]:
    return list(target.phrases)


class Restrictions:
    def __init__(self, policy: Policy, penalty: float):
        self.policy = policy
        self.penalty = penalty
        self._targets = {t.id: t for t in policy.targets}
        self._compile = lru_cache(maxsize=256)(self._compile_uncached)

    def for_conversation(self, conversation: str) -> Restriction:
        return self._compile(tuple(self._targets))

    def _compile_uncached(self, target_ids: tuple[str, ...]) -> Restriction:
        phrases = [p for tid in target_ids for p in forbidden_phrases(self._targets[tid])]
        patterns = compile_patterns(phrases)
        if not patterns:
            return Restriction(target_ids, None, None)
        return Restriction(target_ids, GuardSpec(patterns, self.penalty), LeakDetector(phrases))
