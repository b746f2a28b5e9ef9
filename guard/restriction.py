"""From a policy to what one request is restricted by.

`Restrictions.for_conversation` asks the prompt classifier which targets a conversation is about;
for each, it retrieves the forget items nearest to the conversation and extracts forbidden spans
from them, merged with the target's explicit phrases. The result is the compiled spec (for the
engine) and the leak detector (for the output stream) of exactly those targets, with a penalty
that grows with the classifier's confidence. A conversation that touches no target gets no
restriction: the plain path, no per-step work. Without a classifier, every target applies to every
request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from guard.leaks import LeakDetector
from guard.policy import Policy
from guard.spans import SpanExtractor, forget_items, nearest
from guard.spec import GuardSpec, compile_patterns

RETRIEVED_ITEMS = 4


@dataclass(frozen=True)
class Restriction:
    target_ids: tuple[str, ...]
    spec: GuardSpec | None  # None: nothing to restrict, the plain path
    detector: LeakDetector | None
    confidence: float = 1.0
    policy_version: int = 0  # the store version of the policy it came from (for the audit log)


UNRESTRICTED = Restriction((), None, None, 0.0)


class Restrictions:
    def __init__(self, policy: Policy, penalty: float, classifier=None, semantic=None, version: int = 0):
        """`semantic`: a guard.semantic.SemanticIndex for the engine's tokenizer (optional).
        `version`: the policy's version in the server's policy store."""
        self.policy, self.penalty, self.classifier, self.semantic = policy, penalty, classifier, semantic
        self.version = version
        self._targets = {t.id: t for t in policy.targets}
        self._compile = lru_cache(maxsize=512)(self._compile_uncached)
        if classifier is not None:
            self._extractor = SpanExtractor()
            self._items = {t.id: forget_items(t) for t in policy.targets}
            self._item_vectors = {tid: classifier.encoder.embed([i.key for i in items])
                                  for tid, items in self._items.items()}
            if semantic is not None:  # warm the per-word cache: keeps ~20 ms per new word off the request path
                for target in policy.targets:
                    semantic.penalties([*target.phrases, *self._extractor.spans([i.text for i in self._items[target.id]])],
                                       penalty)

    def for_conversation(self, views: list[str]) -> Restriction:
        """`views`: the whole conversation (system + user turns), then the last user turn."""
        if not self._targets:
            return UNRESTRICTED
        if self.classifier is None:
            return self._compile(tuple(self._targets), (), 1.0)
        vectors = self.classifier.encoder.embed(list(dict.fromkeys(views)))
        detection = self.classifier.detect_embedded(vectors)
        if not detection.target_ids:
            return UNRESTRICTED
        spans: list[str] = []
        for target_id in detection.target_ids:
            nearest_items = nearest(self._item_vectors[target_id], vectors[-1], RETRIEVED_ITEMS)
            texts = [self._items[target_id][i].text for i in nearest_items]
            spans += self._extractor.spans(texts, prompt=" ".join(views))
        confidence = round(max(detection.confidence.values()), 1)  # coarse, so compiled specs are shared
        return self._compile(detection.target_ids, tuple(spans), confidence)

    def _compile_uncached(self, target_ids: tuple[str, ...], spans: tuple[str, ...], confidence: float) -> Restriction:
        explicit = [p for tid in target_ids for p in self._targets[tid].phrases]
        patterns = compile_patterns([*explicit, *spans])
        if not patterns:
            return Restriction(target_ids, None, None, confidence, self.version)
        # Names are checked for near-miss spellings too; rare lowercase words only exactly.
        names = explicit + [s for s in spans if any(ch.isupper() or ch.isdigit() for ch in s)]
        penalty = round(self.penalty * (0.5 + 0.5 * confidence), 2)  # adaptive: surer, firmer
        semantic = self.semantic.penalties([*explicit, *spans], penalty) if self.semantic else ()
        return Restriction(target_ids, GuardSpec(patterns, penalty, semantic=semantic),
                           LeakDetector([*explicit, *spans], fuzzy_phrases=names), confidence, self.version)
