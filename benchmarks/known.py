"""The known-entity suite: forgetting what a small base model already knows.

Unlike the synthetic and TOFU suites there is no fine-tuning (`train` is empty): the bundled
SmolLM2-135M-Instruct learnt these facts in pre-training. The Harry Potter series is the forget
subject; famous books and authors, world capitals and company founders are retained, so the suite
shows whether forgetting one famous book series costs knowledge of the others. The items are
written by hand in data/known_entities.yaml.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.items import QA, BenchData, Subject

KNOWN_ENTITIES = Path(__file__).parent / "data" / "known_entities.yaml"
ITEM_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answers", "key")
SUBJECT_FIELDS = ("id", "name", "description")


def load_known(path: str | Path = KNOWN_ENTITIES) -> BenchData:
    """The suite in `path` (default: the bundled Harry Potter suite) as BenchData."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the known-entity suite ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with name, subjects, forget and retain")
    subjects = tuple(_subject(raw, f"{path}: subjects.{i}") for i, raw in enumerate(data.get("subjects") or []))
    forget = _section(data, "forget", path)
    unknown = {qa.subject for qa in forget} - {s.id for s in subjects}
    if unknown:
        raise ValueError(f"{path}: forget items about {sorted(unknown)} have no entry under subjects")
    return BenchData(name=str(data.get("name", path.stem)), forget=forget, retain=_section(data, "retain", path),
                     subjects=subjects, train=())


def _section(data: dict, section: str, path: Path) -> tuple[QA, ...]:
    """`section` maps subject ids to lists of items."""
    groups = data.get(section)
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"{path}: {section} must map subject ids to lists of items")
    return tuple(_qa(raw, subject, f"{path}: {section}.{subject}.{i}")
                 for subject, items in groups.items() for i, raw in enumerate(items or []))


def _subject(raw: object, where: str) -> Subject:
    _require(raw, SUBJECT_FIELDS, where)
    return Subject(id=raw["id"], name=raw["name"], description=raw["description"],
                   phrases=tuple(raw.get("phrases") or ()))


def _qa(raw: object, subject: str, where: str) -> QA:
    _require(raw, ITEM_FIELDS, where)
    perturbed = raw["perturbed_answers"]
    if not isinstance(perturbed, list) or not perturbed or not all(isinstance(p, str) for p in perturbed):
        raise ValueError(f"{where}: perturbed_answers must be a non-empty list of strings")
    return QA(question=raw["question"], answer=raw["answer"], paraphrased_answer=raw["paraphrased_answer"],
              perturbed_answers=tuple(perturbed), subject=subject, key=str(raw["key"]))


def _require(raw: object, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with {', '.join(fields)}")
    for name in fields:
        if name not in raw:
            raise ValueError(f"{where}: missing field {name!r}")
