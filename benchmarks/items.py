"""The benchmark's data model: question/answer items about subjects, split into forget and retain.

Every suite (synthetic people, known entities, TOFU, MUSE) is read into a `BenchData`, so the
runner, the metrics and the report never depend on where the data came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from guard.policy import Policy, parse_policy


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # the reference answer (ROUGE-L, probability)
    paraphrased_answer: str  # the same fact in other words (truth ratio's denominator)
    perturbed_answers: tuple[str, ...]  # plausible wrong answers (truth ratio's numerator)
    subject: str  # id of the Subject the item is about
    key: str  # the short fact the answer carries ("Valmora", "J.K. Rowling"): a leak when it appears


@dataclass(frozen=True)
class Subject:
    id: str  # [a-z0-9-]+, becomes a policy target id when the subject is forgotten
    name: str
    description: str  # one sentence, the policy target's description
    phrases: tuple[str, ...] = ()  # explicit forbidden phrases (the name and its parts)


@dataclass(frozen=True)
class BenchData:
    name: str
    forget: tuple[QA, ...]
    retain: tuple[QA, ...]
    subjects: tuple[Subject, ...]  # the forget subjects
    train: tuple[QA, ...] = field(default=())  # what the "target" model is fine-tuned on; () = the base already knows
    keep: tuple[str, ...] = ()  # the retained subjects' names: every target's `keep`, as an operator would give them

    def policy(self) -> Policy:
        """The guard's policy for this data: one target per forget subject, with its forget QA, and
        the retained subjects as the neighbours it must keep."""
        return parse_policy({"targets": [
            {"id": s.id, "description": s.description, "phrases": list(s.phrases), "keep": list(self.keep),
             "qa": [{"question": q.question, "answer": q.answer} for q in self.forget if q.subject == s.id]}
            for s in self.subjects]})


def evenly_spaced(items, limit: int | None) -> list:
    """At most `limit` of `items`, evenly spaced so every subject keeps some (TOFU likewise evaluates
    utility on a subset of its retain set); all of them when `limit` is None."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def write_jsonl(path: Path, pairs) -> Path:
    """(question, answer) `pairs` as the JSONL that `guard unlearn` reads."""
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return path
