"""The prompt classifier: a sentence encoder and a scikit-learn head over {none, target_1, ...}.

Trained from the policy alone in seconds. The decision threshold is calibrated on out-of-fold
scores of the negatives (general and near-domain prompts) to a target false-positive rate, never
below what keeps every one of the operator's `keep` prompts unflagged, nor below what keeps all
but NEIGHBOUR_FPR of the made-up neighbours unflagged; the achieved FPR/FNR are stored beside the
model. A trained classifier is cached on disk under a hash of everything it depends on (encoder,
policy, data, seed), so it is retrained only when they change.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from classifiers import training_data
from classifiers.encoder import DEFAULT_ENCODER, load_encoder
from classifiers.training_data import NONE
from guard.files import cache_key, file_sha256, write_atomically
from guard.policy import Policy

DATA_VERSION = 5  # bump when the training data recipe changes
# The made-up neighbours (classifiers.training_data.neighbour_prompts) are the hardest negatives: the
# threshold is never so low that more than this share of them is flagged (out of fold).
NEIGHBOUR_FPR = 0.03


@dataclass(frozen=True)
class Detection:
    target_ids: tuple[str, ...]  # targets at or above the threshold, most confident first
    confidence: dict[str, float]  # probability per flagged target


@dataclass
class Report:
    """How the classifier did on out-of-fold predictions of its own training data."""

    threshold: float
    target_fpr: float
    fpr_general: float
    fpr_near_domain: float
    fpr_keep: float
    fpr_neighbour: float
    fnr: float
    examples: int
    seconds: float
    fields: dict[str, list[str]] = field(default_factory=dict)  # target -> near-domain fields used


class PromptClassifier:
    def __init__(self, head: LogisticRegression, labels: list[str], threshold: float, encoder_name: str,
                 report: Report, negatives: tuple[str, ...] = ()):
        """`negatives`: the prompts it was taught are about no target (guard.mentions' background)."""
        self.head, self.labels, self.threshold = head, labels, threshold
        self.encoder_name, self.report, self.negatives = encoder_name, report, negatives
        self.encoder = load_encoder(encoder_name)

    def detect(self, texts: list[str]) -> Detection:
        """Targets a conversation is about; `texts` are views of it (whole conversation, last turn):
        a target counts when any view reaches the threshold."""
        return self.detect_embedded(self.encoder.embed(list(dict.fromkeys(texts))))

    def detect_embedded(self, vectors: np.ndarray) -> Detection:
        if len(vectors) == 0 or len(self.labels) == 1:
            return Detection((), {})
        probabilities = self.head.predict_proba(vectors).max(axis=0)
        flagged = {str(label): float(p) for label, p in zip(self.labels, probabilities)
                   if label != NONE and p >= self.threshold}
        return Detection(tuple(sorted(flagged, key=flagged.get, reverse=True)), flagged)


def train(policy: Policy, *, encoder_name: str = DEFAULT_ENCODER, target_fpr: float = 0.01, seed: int = 0,
          cache_dir: Path | None = None) -> PromptClassifier:
    key = _cache_key(policy, encoder_name, target_fpr, seed)
    path = cache_dir / f"classifier-{key}.joblib" if cache_dir else None
    if path is not None and path.exists():
        saved = joblib.load(path)
        return PromptClassifier(saved["head"], saved["labels"], saved["threshold"], encoder_name, saved["report"],
                                saved["negatives"])
    started = time.perf_counter()
    rng = random.Random(seed)
    encoder = load_encoder(encoder_name)
    texts, labels, kinds, fields = _dataset(policy, encoder, rng)
    x = encoder.embed(texts)
    y = np.array(labels)
    head = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    folds = StratifiedKFold(n_splits=max(2, min(5, _smallest_class(y))), shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(head, x, y, cv=folds, method="predict_proba")
    classes = sorted(set(labels))
    target_score = out_of_fold[:, [i for i, c in enumerate(classes) if c != NONE]].max(axis=1)
    negative = y == NONE
    kinds = np.array(kinds)
    threshold = max(_threshold_for_fpr(target_score[negative & (kinds != "neighbour")], target_fpr),
                    _threshold_for_fpr(target_score[kinds == "keep"], 0.0),
                    _threshold_for_fpr(target_score[kinds == "neighbour"], NEIGHBOUR_FPR))
    head.fit(x, y)
    predicted = np.array(classes)[out_of_fold.argmax(axis=1)]
    hit = (target_score >= threshold) & (predicted == y)
    report = Report(
        threshold=threshold, target_fpr=target_fpr,
        fpr_general=float((target_score[kinds == "general"] >= threshold).mean()),
        fpr_near_domain=_flagged_share(target_score[kinds == "near-domain"], threshold),
        fpr_keep=_flagged_share(target_score[kinds == "keep"], threshold),
        fpr_neighbour=_flagged_share(target_score[kinds == "neighbour"], threshold),
        fnr=float(1 - hit[~negative].mean()) if (~negative).any() else 0.0,
        examples=len(texts), seconds=time.perf_counter() - started, fields=fields,
    )
    negatives = tuple(dict.fromkeys(t for t, label in zip(texts, labels) if label == NONE))
    classifier = PromptClassifier(head, [str(c) for c in head.classes_], threshold, encoder_name, report, negatives)
    if path is not None:
        saved = {"head": head, "labels": classifier.labels, "threshold": threshold, "report": report,
                 "negatives": negatives}
        write_atomically(path, lambda tmp: joblib.dump(saved, tmp))
    return classifier


def _dataset(policy: Policy, encoder, rng: random.Random):
    texts, labels, kinds = [], [], []
    fields: dict[str, list[str]] = {}
    descriptions = training_data.field_descriptions()
    names = list(descriptions)
    field_vectors = encoder.embed(list(descriptions.values()))
    taken = set().union(*(training_data.own_words(t) for t in policy.targets))
    for target in policy.targets:
        for text in training_data.target_positives(target, rng):
            texts.append(text), labels.append(target.id), kinds.append("target")
        closeness = field_vectors @ encoder.embed([target.description])[0]
        fields[target.id] = [names[i] for i in np.argsort(-closeness)[:2]]
        near_domain = training_data.near_domain_prompts(taken, fields[target.id], rng)
        for text in near_domain:
            texts.append(text), labels.append(NONE), kinds.append("near-domain")
        for text in training_data.neighbour_prompts(target, taken, fields[target.id], near_domain, rng):
            texts.append(text), labels.append(NONE), kinds.append("neighbour")
        for text in training_data.keep_prompts(target, rng):
            texts.append(text), labels.append(NONE), kinds.append("keep")
    near = {f for chosen in fields.values() for f in chosen}
    general = training_data.general_prompts()
    for target in policy.targets:  # short entity questions from every other field ("Who founded Apple?")
        general += training_data.near_domain_prompts(taken, [f for f in names if f not in near], rng, per_field=20)
    for text in dict.fromkeys(general):
        texts.append(text), labels.append(NONE), kinds.append("general")
    return texts, labels, kinds, fields


def _threshold_for_fpr(negative_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most `target_fpr` of the negatives score at or above it."""
    ranked = np.sort(negative_scores)[::-1]
    allowed = int(np.floor(target_fpr * len(ranked)))
    above = ranked[allowed] if allowed < len(ranked) else 0.0
    return float(min(max(np.nextafter(above, 1.0), 0.05), 0.99))


def _flagged_share(scores: np.ndarray, threshold: float) -> float:
    return float((scores >= threshold).mean()) if len(scores) else 0.0


def _smallest_class(y: np.ndarray) -> int:
    return int(min(np.unique(y, return_counts=True)[1]))


def _cache_key(policy: Policy, encoder_name: str, target_fpr: float, seed: int) -> str:
    return cache_key(DATA_VERSION, training_data_digest(), encoder_name, target_fpr, seed, policy.model_dump(mode="json"))


@lru_cache(maxsize=1)
def training_data_digest() -> str:
    """A digest of what the training data is made from: the package's data files and the recipe's
    source (classifiers/training_data.py), so that a cached classifier trained on other data is not
    reused (read once per process)."""
    package = resources.files("classifiers")
    data = sorted((f for f in package.joinpath("data").iterdir() if f.is_file()), key=lambda f: f.name)
    return digest_files([*data, package.joinpath("training_data.py")])


def digest_files(files) -> str:
    return cache_key(*[(file.name, file_sha256(file)) for file in files])
