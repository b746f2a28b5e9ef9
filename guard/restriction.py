"""From a policy to what one request is restricted by.

`Restrictions.for_conversation` asks the prompt classifier which targets a conversation is about;
for each, it retrieves the forget items nearest to the conversation and extracts forbidden spans
from them, merged with the target's explicit phrases: the *full* restriction, with strict near-miss
rules and a penalty that grows with the classifier's confidence.

Every other target whose policy says `enforce: always` (the default) still has its explicit phrases
enforced: the *safety net*. Its phrases are blocked in the engine and their near-misses rewound
(lenient rules: guard.leaks), with no soft penalty, so an answer that never approaches one is token
for token the unguarded answer. A conversation the classifier does not flag gets the safety net
alone. Without a classifier, every target applies to every request in full.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from guard.folding import fold
from guard.leaks import MIN_FUZZY_WORD, CombinedDetector, Detector, LeakDetector, Violation
from guard.policy import Policy
from guard.spans import SpanExtractor, forget_items, nearest
from guard.spec import GuardSpec, compile_patterns

RETRIEVED_ITEMS = 4


@dataclass(frozen=True)
class Restriction:
    target_ids: tuple[str, ...]  # the targets detected (the x-guard-targets header)
    spec: GuardSpec | None  # None: nothing to restrict, the plain path
    detector: Detector | None
    confidence: float = 1.0
    policy_version: int = 0  # the store version of the policy it came from (for the audit log)
    owners: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)  # folded phrase/word -> targets

    def targets_of(self, violations: Iterable[Violation]) -> tuple[str, ...]:
        """The targets whose phrases `violations` were about."""
        return tuple(sorted({t for v in violations for t in self.owners.get(v.forbidden, ())}))


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
        self.safety_net = self._compile((), (), 0.0)  # what a conversation about no target gets

    def for_conversation(self, views: list[str]) -> Restriction:
        """`views`: the whole conversation (system + user turns), then the last user turn."""
        if not self._targets:
            return UNRESTRICTED
        if self.classifier is None:
            return self._compile(tuple(self._targets), (), 1.0)
        vectors = self.classifier.encoder.embed(list(dict.fromkeys(views)))
        detection = self.classifier.detect_embedded(vectors)
        if not detection.target_ids:
            return self.safety_net
        spans: list[str] = []
        for target_id in detection.target_ids:
            nearest_items = nearest(self._item_vectors[target_id], vectors[-1], RETRIEVED_ITEMS)
            texts = [self._items[target_id][i].text for i in nearest_items]
            spans += [(target_id, s) for s in self._extractor.spans(texts, prompt=" ".join(views))]
        confidence = round(max(detection.confidence.values()), 1)  # coarse, so compiled specs are shared
        return self._compile(detection.target_ids, tuple(spans), confidence)

    def _compile_uncached(self, target_ids: tuple[str, ...], spans: tuple[tuple[str, str], ...],
                          confidence: float) -> Restriction:
        """`spans`: (target id, span) retrieved for the detected targets."""
        detected = [(tid, p) for tid in target_ids for p in self._targets[tid].phrases] + list(spans)
        net = [(t.id, p) for t in self.policy.targets if t.enforce == "always" and t.id not in target_ids
               for p in t.phrases]
        patterns = compile_patterns(p for _, p in detected + net)
        if not patterns:
            return Restriction(target_ids, None, None, confidence, self.version)
        explicit = [p for tid in target_ids for p in self._targets[tid].phrases]
        detectors = []
        if detected:
            # Names are checked for near-miss spellings too; rare lowercase words only exactly.
            names = explicit + [s for _, s in spans if any(ch.isupper() or ch.isdigit() for ch in s)]
            detectors.append(LeakDetector([p for _, p in detected], fuzzy_phrases=names))
        if net:
            detectors.append(LeakDetector([p for _, p in net], strict=False))
        penalty = round(self.penalty * (0.5 + 0.5 * confidence), 2) if target_ids else 0.0  # surer, firmer
        semantic = self.semantic.penalties([p for _, p in detected], penalty) if self.semantic and detected else ()
        spec = GuardSpec(patterns, penalty, compile_patterns(p for _, p in detected), semantic=semantic)
        detector = detectors[0] if len(detectors) == 1 else CombinedDetector(detectors)
        return Restriction(target_ids, spec, detector, confidence, self.version, _owners(detected + net))


def _owners(phrases: list[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Folded phrase, and each folded word of it long enough for near-miss checks -> its targets."""
    owners: dict[str, set[str]] = defaultdict(set)
    for target_id, phrase in phrases:
        owners[fold(phrase)].add(target_id)
        for word in phrase.split():
            if len(fold(word)) >= MIN_FUZZY_WORD:
                owners[fold(word)].add(target_id)
    return {key: tuple(sorted(ids)) for key, ids in owners.items()}
