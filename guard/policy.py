"""The policy file: which targets to forget and what each target's forget data says.

Schema (docs/policy.md): a list of targets, each with an id, a description and optional phrases, QA
pairs, documents and example prompts, `keep`: neighbours that must stay answerable (other people,
works, prompts: the classifier's negatives), and `enforce`: whether its explicit phrases are enforced on
every answer (`always`, the default) or only on conversations the classifier flags for it
(`detected`). Unknown keys are errors; errors name the bad field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guard.folding import fold

MIN_FOLDED_PHRASE = 3  # shorter phrases ("Ro", "J") would forbid half the language
# What the guard can enforce, checked here, where a policy arrives (a file, POST /v1/forget), so a
# target that is accepted can always be enforced and no user's request fails on an admin's input.
MAX_PATTERNS = 4096  # folded patterns one request's spec may carry (guard.spec)
MAX_PATTERN_CHARS = 128  # folded letters of one pattern
REQUEST_SPANS = 1024  # spans and key facts a flagged request adds to its targets' phrases, at most
MAX_POLICY_PHRASES = MAX_PATTERNS - REQUEST_SPANS  # distinct folded phrases of a whole policy
MAX_TARGET_PHRASES = 1024
MAX_TARGETS = 1024
MAX_ITEMS = 2000  # QA pairs, documents, examples or keep entries of one target, each
MAX_TEXT_CHARS = 20_000  # one question, answer, document, example or description
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Items = Annotated[tuple[Text, ...], Field(max_length=MAX_ITEMS)]


class QAPair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: Text
    answer: Text


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9-]+$", max_length=64)
    description: Text
    phrases: Annotated[tuple[Text, ...], Field(max_length=MAX_TARGET_PHRASES)] = ()
    qa: Annotated[tuple[QAPair, ...], Field(max_length=MAX_ITEMS)] = ()
    documents: Items = ()
    examples: Items = ()
    keep: Items = ()
    enforce: Literal["always", "detected"] = "always"

    @field_validator("phrases")
    @classmethod
    def _phrases_are_matchable(cls, phrases: tuple[str, ...]) -> tuple[str, ...]:
        for phrase in phrases:
            if len(fold(phrase)) < MIN_FOLDED_PHRASE:
                raise ValueError(
                    f"phrase {phrase!r} has fewer than {MIN_FOLDED_PHRASE} letters or digits; "
                    "it would forbid common text"
                )
            if len(fold(phrase)) > MAX_PATTERN_CHARS:
                raise ValueError(f"phrase {phrase[:40]!r}... has more than {MAX_PATTERN_CHARS} letters or digits")
        return phrases


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    targets: Annotated[tuple[Target, ...], Field(max_length=MAX_TARGETS)] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> "Policy":
        seen: set[str] = set()
        for target in self.targets:
            if target.id in seen:
                raise ValueError(f"duplicate target id {target.id!r}")
            seen.add(target.id)
        return self

    @model_validator(mode="after")
    def _enforceable(self) -> "Policy":
        phrases = len({fold(p) for target in self.targets for p in target.phrases})
        if phrases > MAX_POLICY_PHRASES:
            raise ValueError(f"phrases: the targets hold {phrases} distinct phrases in all; at most "
                             f"{MAX_POLICY_PHRASES} can be enforced on one request")
        return self

    @property
    def target_ids(self) -> list[str]:
        return [t.id for t in self.targets]


class PolicyError(ValueError):
    """A policy that cannot be loaded; the message names the file and the bad field."""


def parse_policy(data: object, source: str = "policy") -> Policy:
    if data is None:
        data = {}
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {describe_validation_error(exc)}") from None


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc})") from None
    return parse_policy(data, source=str(path))


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field by its path (targets.0.phrases.2). A whole-model
    check names its field in its message ("retain: ...")."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
