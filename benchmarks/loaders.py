"""Readers for the published unlearning benchmarks TOFU and MUSE, when a user has them.

`source` is a local folder holding the published files, or a Hugging Face dataset name
("locuslab/TOFU", "muse-bench/MUSE-News") read with the `datasets` library when it is installed.
Nothing is downloaded unless a hub name is given; tests and offline machines use folders.

TOFU (locuslab/TOFU): 200 fictitious authors, 20 QA each, in `full`, ordered by author (rows
20*i..20*i+19 are author i). The forget splits forget01/05/10 are the last 2/10/20 authors. The
`*_perturbed` configs add `paraphrased_answer` and a list `perturbed_answer` for truth ratio.
Local files are named after the configs: forget10_perturbed.json, retain_perturbed.json,
retain90.json, full.json (a JSON array or JSON Lines; the hub's files are JSON Lines).
TOFU answers carry no short fact, so `key` is "": TOFU's leak is judged by ROUGE, not by key.

MUSE (muse-bench/MUSE-News, MUSE-Books): knowmem QA (`question`, `answer`) in splits forget_qa
and retain_qa; verbmem forget passages (`prompt`, `gt`). Local layout as in the MUSE repository:
<folder>/knowmem/forget_qa.json (or <folder>/<corpus>/knowmem/...). MUSE has no paraphrased or
perturbed answers (truth ratio does not apply) and its target model was trained on the raw
articles, not on QA, so `train` is empty.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.items import QA, BenchData, Subject

TOFU_HUB = "locuslab/TOFU"
TOFU_AUTHORS = 200
TOFU_QA_PER_AUTHOR = 20
TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
TOFU_FIELDS = ("question", "answer")
TOFU_PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")

MUSE_HUB = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
MUSE_DESCRIPTIONS = {
    "news": "The BBC news articles of the MUSE-News forget set and the events, people and figures they report.",
    "books": "The Harry Potter books of the MUSE-Books forget set: their story, characters and places.",
}
MUSE_FIELDS = ("question", "answer")
MUSE_VERBMEM_FIELDS = ("prompt", "gt")
MUSE_KEY_WORDS = 5  # answers up to this many words are short facts, usable as leak keys

HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")
SUFFIXES = (".json", ".jsonl")


def load_tofu(source: str, forget_split: str = "forget10") -> BenchData:
    """TOFU with `forget_split`'s authors forgotten. Forget items come from `<split>_perturbed`
    (else `<split>`), retain items from `retain_perturbed` (else `retain90/95/99`), train from
    `full` (else empty: the model is taken to be TOFU's fine-tuned target already). Subjects are
    the forget authors, `tofu-author-NNN`, NNN = the author's row in `full` // 20."""
    if forget_split not in TOFU_FORGET_SPLITS:
        raise ValueError(f"forget_split must be one of {', '.join(TOFU_FORGET_SPLITS)}, got {forget_split!r}")
    local = _is_local(source)
    retain_split = f"retain{100 - int(forget_split.removeprefix('forget')):02d}"
    forget_rows = _tofu_first(source, local, (f"{forget_split}_perturbed", forget_split))
    retain_rows = _tofu_first(source, local, ("retain_perturbed", retain_split))
    full_rows = _tofu_config(source, local, "full", TOFU_FIELDS) or []
    row_in_full: dict[str, int] = {}
    for row, item in enumerate(full_rows):
        row_in_full.setdefault(item["question"], row)

    def author(item: dict, row_if_not_in_full: int) -> int:
        return row_in_full.get(item["question"], row_if_not_in_full) // TOFU_QA_PER_AUTHOR

    first_forget_row = TOFU_AUTHORS * TOFU_QA_PER_AUTHOR - len(forget_rows)  # the forget authors are the last
    forget_authors = [author(item, first_forget_row + i) for i, item in enumerate(forget_rows)]
    forget = tuple(_tofu_qa(item, a) for item, a in zip(forget_rows, forget_authors))
    retain = tuple(_tofu_qa(item, author(item, i)) for i, item in enumerate(retain_rows))
    train = tuple(_tofu_qa(item, author(item, i)) for i, item in enumerate(full_rows))
    subjects = tuple(
        Subject(id=_tofu_author_id(a), name=f"TOFU author {a}",
                description=f"TOFU's fictitious author number {a}: their life, family, books and awards.")
        for a in dict.fromkeys(forget_authors))
    return BenchData(name=f"tofu-{forget_split}", forget=forget, retain=retain, subjects=subjects, train=train)


def load_muse(source: str, corpus: str = "news") -> BenchData:
    """MUSE's knowmem QA of `corpus` ("news" or "books"): forget_qa forgotten, retain_qa kept,
    all about one subject, the corpus's forget set."""
    if corpus not in MUSE_HUB:
        raise ValueError(f"corpus must be one of {', '.join(MUSE_HUB)}, got {corpus!r}")
    local = _is_local(source)
    subject = Subject(id=f"muse-{corpus}", name=f"MUSE-{corpus.capitalize()} forget set",
                      description=MUSE_DESCRIPTIONS[corpus])
    forget_rows = _muse_split(source, local, corpus, "knowmem", ("forget_qa",), MUSE_FIELDS)
    retain_rows = _muse_split(source, local, corpus, "knowmem", ("retain_qa", "retain2_qa"), MUSE_FIELDS)
    return BenchData(name=f"muse-{corpus}", subjects=(subject,),
                     forget=tuple(_muse_qa(item, subject.id) for item in forget_rows),
                     retain=tuple(_muse_qa(item, f"muse-{corpus}-retain") for item in retain_rows))


def load_muse_verbmem(source: str, corpus: str = "news") -> tuple[tuple[str, str], ...]:
    """MUSE's verbmem forget passages as (prompt, true continuation) pairs, for the verbatim
    memorisation metric (ROUGE-L F1 of the model's continuation against the true one)."""
    if corpus not in MUSE_HUB:
        raise ValueError(f"corpus must be one of {', '.join(MUSE_HUB)}, got {corpus!r}")
    rows = _muse_split(source, _is_local(source), corpus, "verbmem", ("forget",), MUSE_VERBMEM_FIELDS)
    return tuple((item["prompt"], item["gt"]) for item in rows)


def read_records(path: Path) -> list[dict]:
    """The objects of a JSON file holding an array of them, or of a JSON Lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON or JSON Lines ({exc})") from None
    if not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path}: expected JSON objects, one per item")
    return records


def _is_local(source: str) -> bool:
    """True for an existing folder, False for a hub name ("owner/name") that is no local path."""
    path = Path(source)
    if path.is_dir():
        return True
    if path.exists():
        raise ValueError(f"{source}: not a folder; pass the folder that holds the benchmark's JSON files")
    if HUB_NAME.fullmatch(source):
        return False
    raise ValueError(f"{source}: no such folder, and not a Hugging Face dataset name (owner/name)")


def _tofu_first(source: str, local: bool, configs: tuple[str, ...]) -> list[dict]:
    """The validated rows of the first of `configs` the folder has."""
    for config in configs:
        fields = TOFU_PERTURBED_FIELDS if config.endswith("_perturbed") else TOFU_FIELDS
        rows = _tofu_config(source, local, config, fields)
        if rows is not None:
            return rows
    raise ValueError(f"{source}: none of {', '.join(c + '.json' for c in configs)} found; download them "
                     f"from https://huggingface.co/datasets/{TOFU_HUB} into that folder")


def _tofu_config(source: str, local: bool, config: str, fields: tuple[str, ...]) -> list[dict] | None:
    """The validated rows of one TOFU config; None when the folder lacks its file."""
    if not local:
        return _validated(_hub_rows(source, config, "train"), fields, f"{source} ({config})")
    path = _find(Path(source), config)
    return None if path is None else _validated(read_records(path), fields, str(path))


def _muse_split(source: str, local: bool, corpus: str, subset: str, splits: tuple[str, ...],
                fields: tuple[str, ...]) -> list[dict]:
    """The validated rows of the first of `splits` found (the MUSE repository once named
    retain_qa retain2_qa)."""
    if not local:
        return _validated(_hub_rows(source, subset, splits[0]), fields, f"{source} ({subset}, {splits[0]})")
    folders = (Path(source) / subset, Path(source) / corpus / subset)
    for split in splits:
        for folder in folders:
            path = _find(folder, split)
            if path is not None:
                return _validated(read_records(path), fields, str(path))
    raise ValueError(f"{source}: no {subset}/{splits[0]}.json (nor under {corpus}/); download it from "
                     f"https://huggingface.co/datasets/{MUSE_HUB[corpus]} into that folder")


def _find(folder: Path, name: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def _hub_rows(name: str, config: str, split: str) -> list[dict]:
    """Rows of one config and split of a Hugging Face dataset; needs `datasets` and the network
    (or its cache)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise ValueError(f"{name} is no local folder, and reading it from the Hugging Face Hub needs the "
                         "`datasets` package (pip install datasets); or put the benchmark's JSON files "
                         "in a folder and pass that folder") from None
    try:
        return [dict(row) for row in load_dataset(name, config, split=split)]
    except Exception as exc:  # offline, unknown dataset or config: one clear line, not a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load {name} ({config}, {split}) from the Hugging Face Hub: {reason}; "
                         "offline? put the benchmark's JSON files in a folder and pass that folder") from None


def _validated(rows: list[dict], fields: tuple[str, ...], where: str) -> list[dict]:
    """The rows, once each is known to have every field; errors name the file and the field."""
    for i, row in enumerate(rows):
        for field in fields:
            if field not in row:
                raise ValueError(f"{where}: item {i} has no field {field!r}")
            value = row[field]
            if field == "perturbed_answer":
                if not isinstance(value, (str, list)) or not all(isinstance(v, str) for v in _as_list(value)):
                    raise ValueError(f"{where}: item {i}: field 'perturbed_answer' must be a list of strings")
            elif not isinstance(value, str):
                raise ValueError(f"{where}: item {i}: field {field!r} must be a string")
    return rows


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _tofu_author_id(author: int) -> str:
    return f"tofu-author-{author:03d}"


def _tofu_qa(item: dict, author: int) -> QA:
    return QA(question=item["question"], answer=item["answer"],
              paraphrased_answer=item.get("paraphrased_answer", item["answer"]),
              perturbed_answers=tuple(_as_list(item.get("perturbed_answer", []))),
              subject=_tofu_author_id(author), key="")


def _muse_qa(item: dict, subject: str) -> QA:
    answer = item["answer"]
    return QA(question=item["question"], answer=answer, paraphrased_answer=answer, perturbed_answers=(),
              subject=subject, key=answer if len(answer.split()) <= MUSE_KEY_WORDS else "")
