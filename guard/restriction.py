"""From a policy to what one request is restricted by.

`Restrictions.for_conversation` finds which targets a conversation is about: those it names
(guard.mentions, outright) and those the prompt classifier flags. For each, it retrieves the forget
items nearest to the last user turn and extracts forbidden spans from them, merged with the target's
explicit phrases: the *full* restriction, with strict near-miss rules and a penalty that grows with
the classifier's confidence. The nearest item's key facts are forbidden even in common words ("a
miller", "in 1834"), for this conversation only: blocked and rewound, never penalised.

Every other target whose policy says `enforce: always` (the default) still has its explicit phrases
enforced: the *safety net*. Its phrases are blocked in the engine and their near-misses rewound
(lenient rules: guard.leaks), with no soft penalty, so an answer that never approaches one is token
for token the unguarded answer. A conversation about no target gets the safety net alone. Without a
classifier, every target applies to every request in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from guard.conversation import Conversation
from guard.leaks import CombinedDetector, Detector, LeakDetector, Violation
from guard.mentions import Mentions
from guard.name_words import embedded_words, leading_words, phrase_owners
from guard.policy import MAX_PATTERNS, REQUEST_SPANS, Policy
from guard.spans import KEY_FACT_ZIPF, SpanExtractor, forget_items, nearest
from guard.spec import GuardSpec, compile_patterns

RETRIEVED_ITEMS = 4
KEY_FACTS = 6  # from the nearest item: its names, numbers, then its least common words


@dataclass(frozen=True)
class Restriction:
    target_ids: tuple[str, ...]  # the targets detected (the x-guard-targets header)
    spec: GuardSpec | None  # None: nothing to restrict, the plain path
    detector: Detector | None
    policy_version: int = 0  # the store version of the policy it came from (for the audit log)
    owners: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)  # folded phrase/word -> targets

    def targets_of(self, violations: Iterable[Violation]) -> tuple[str, ...]:
        """The targets whose phrases `violations` were about."""
        return tuple(sorted({t for v in violations for t in self.owners.get(v.forbidden, ())}))


UNRESTRICTED = Restriction((), None, None)


class Restrictions:
    def __init__(self, policy: Policy, penalty: float, classifier=None, semantic=None, version: int = 0,
                 translate: Callable[[list[str]], list[str]] | None = None):
        """`semantic`: a guard.semantic.SemanticIndex for the engine's tokenizer (optional).
        `version`: the policy's version in the server's policy store. `translate`: a conversation's
        views as the classifier reads them, English translations added (classifiers.translation)."""
        self.policy, self.penalty, self.classifier, self.semantic = policy, penalty, classifier, semantic
        self.version, self.translate = version, translate
        self._targets = {t.id: t for t in policy.targets}
        self._compile = lru_cache(maxsize=512)(self._compile_uncached)
        if classifier is not None:
            self._extractor, self._key_facts = SpanExtractor(), SpanExtractor(max_spans=KEY_FACTS)
            self._items = {t.id: forget_items(t) for t in policy.targets}
            self._item_vectors = {tid: classifier.encoder.embed([i.key for i in items])
                                  for tid, items in self._items.items()}
            self.mentions = Mentions(policy, background=classifier.negatives)
            if semantic is not None:  # warm the per-word cache: keeps ~20 ms per new word off the request path
                for target in policy.targets:
                    semantic.penalties([*target.phrases, *self._extractor.spans([i.text for i in self._items[target.id]])],
                                       penalty)
        embedded_words(())  # loads the English word list (about 1 s) here, not on a request's path
        self.safety_net = self._compile((), (), (), 0.0)  # what a conversation about no target gets

    def for_conversation(self, conversation: Conversation) -> Restriction:
        if not self._targets:
            return UNRESTRICTED
        if self.classifier is None:
            return self._compile(tuple(self._targets), (), (), 1.0)
        confidence, vectors = self._detect(conversation)
        if not confidence:
            return self.safety_net
        target_ids = tuple(sorted(confidence, key=confidence.get, reverse=True))
        spans: list[tuple[str, str]] = []
        key_facts: list[tuple[str, str]] = []
        asked = " ".join(conversation.views)
        for target_id in target_ids:
            ranked = nearest(self._item_vectors[target_id], vectors[-1], RETRIEVED_ITEMS)
            texts = [self._items[target_id][i].text for i in ranked]
            spans += [(target_id, s) for s in self._extractor.spans(texts, prompt=asked)]
            key_facts += [(target_id, s) for s in self._key_facts.spans(texts[:1], prompt=asked, rare_zipf=KEY_FACT_ZIPF)
                          if (target_id, s) not in spans]
        confidence = round(max(confidence.values()), 1)  # coarse, so compiled specs are shared
        spans = spans[:REQUEST_SPANS]  # the surest targets' first: what the policy's limits leave room for
        key_facts = key_facts[:REQUEST_SPANS - len(spans)]
        return self._compile(target_ids, tuple(spans), tuple(key_facts), confidence)

    def detect(self, conversation: Conversation) -> dict[str, float]:
        """The targets `conversation` is about, each with its confidence (needs a classifier)."""
        return self._detect(conversation)[0]

    def _detect(self, conversation: Conversation):
        """(target -> confidence: the classifier's, 1.0 for a target the conversation names; the
        embedded views, the last user turn (in English where it was translated) last). The classifier
        reads the views with the words other names borrow from the targets' names taken out."""
        views = self.translate(conversation.views) if self.translate else conversation.views
        vectors = self.classifier.encoder.embed([self.mentions.unborrowed(view) for view in views])
        confidence = dict(self.classifier.detect_embedded(vectors).confidence)
        confidence.update({target_id: 1.0 for target_id in self.mentions.targets_in(conversation.said)})
        return confidence, vectors

    def _compile_uncached(self, target_ids: tuple[str, ...], spans: tuple[tuple[str, str], ...],
                          key_facts: tuple[tuple[str, str], ...], confidence: float) -> Restriction:
        """`spans`, `key_facts`: (target id, text) retrieved for the detected targets. Key facts in
        common words are blocked and rewound under the lenient rules only, never penalised: "village"
        must not push the model off "villa" or "town"."""
        detected = [(tid, p) for tid in target_ids for p in self._targets[tid].phrases] + list(spans)
        lenient = [(t.id, p) for t in self.policy.targets if t.enforce == "always" and t.id not in target_ids
                   for p in t.phrases] + list(key_facts)
        patterns = compile_patterns(p for _, p in detected + lenient)
        if not patterns:
            return Restriction(target_ids, None, None, self.version)
        explicit = [p for tid in target_ids for p in self._targets[tid].phrases]
        # Names are checked for near-miss spellings too; rare lowercase words only exactly.
        names = explicit + [s for _, s in spans if any(ch.isupper() or ch.isdigit() for ch in s)]
        detectors = []
        if detected:
            detectors.append(LeakDetector([p for _, p in detected], fuzzy_phrases=names))
        if lenient:
            detectors.append(LeakDetector([p for _, p in lenient], strict=False))
        penalty = round(self.penalty * (0.5 + 0.5 * confidence), 2) if target_ids else 0.0  # surer, firmer
        semantic = self.semantic.penalties([p for _, p in detected], penalty) if self.semantic and detected else ()
        # What the detectors find inside words; a policy at its phrase limit may hold more words than a spec carries.
        embedded = embedded_words(names + [p for _, p in lenient])[:MAX_PATTERNS]
        spec = GuardSpec(patterns, penalty, compile_patterns(p for _, p in detected),
                         tuple(sorted(leading_words(p for _, p in detected))), embedded=embedded, semantic=semantic)
        detector = detectors[0] if len(detectors) == 1 else CombinedDetector(detectors)
        return Restriction(target_ids, spec, detector, self.version, phrase_owners(detected + lenient))

