"""Command-line options generated from a settings model, so that each option's name, type, default,
help and validation live in one place: the model's field.

A field `max_rewinds` is the option `--max-rewinds`; its description is the help, and the model's
default (or, for serve and proxy, an environment variable `GUARD_MAX_REWINDS`: pydantic-settings)
applies when the option is not given. Options are read as the user typed them and validated by the
model; an error names the option and quotes the user's words as they were. A boolean whose default
is False is a switch (`--audit-text`); one whose default is True is switched off (`--no-classifier`).
A field's `json_schema_extra` may rename its option (`{"flag": "--full"}`, a switch that inverts the
default), make it repeatable (`{"append": True}`), or keep it off the command line (`{"flag": None}`:
secrets, read from the environment only).
"""

from __future__ import annotations

import argparse
import re
import typing
from enum import Enum

from pydantic import BaseModel, ValidationError


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel], metavars: dict[str, str] | None = None) -> None:
    """An option for each field of `model` (its fields' order)."""
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        if flag is None:
            continue
        default = field.get_default(call_default_factory=True)
        helps = [field.description or ""]
        if _is_bool(field.annotation):
            if flag == "--" + name.replace("_", "-") and default is True:
                flag = "--no-" + name.replace("_", "-")
            parser.add_argument(flag, dest=name, action="store_const", const=not default, default=argparse.SUPPRESS,
                                help=helps[0])
            continue
        choices = _choices(field.annotation)
        if choices:  # checked by the model, whose one-line error names the option
            helps.append("one of " + ", ".join(choices))
        if default not in (None, [], {}, "") and not field.is_required():
            helps.append(f"default: {default}")
        parser.add_argument(flag, dest=name, action="append" if extra.get("append") else "store",
                            default=argparse.SUPPRESS, metavar=(metavars or {}).get(name) or (
                                "{" + ",".join(choices) + "}" if choices else None),
                            help="; ".join(h for h in helps if h) or None)


def given(args: argparse.Namespace, model: type[BaseModel]) -> dict:
    """The options the user gave, by field name (the model fills in the rest)."""
    return {name: value for name, value in vars(args).items() if name in model.model_fields}


def build(model: type[BaseModel], args: argparse.Namespace):
    """`model` from the given options, or a ValueError naming each bad option."""
    try:
        return model(**given(args, model))
    except ValidationError as exc:
        raise option_error(exc, model) from None


def option_error(exc: ValidationError, model: type[BaseModel]) -> ValueError:
    """The model's complaints, each naming the option as typed (`--max-rewinds: ...`), the user's own
    words in the message left as they were."""
    problems = []
    for error in exc.errors():
        message = "is required" if error["type"] == "missing" else error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            problems.append(f"{_option(model, str(error['loc'][0]))}: {message}")
        else:  # a whole-model check names its field first ("retain: ...")
            problems.append(re.sub(r"^(\w+):", lambda named: _option(model, named[1]) + ":", message))
    return ValueError("; ".join(problems))


def _option(model: type[BaseModel], name: str) -> str:
    field = model.model_fields.get(name)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    if extra.get("flag", "") is None:  # read from the environment only
        return "GUARD_" + name.upper()
    return extra.get("flag") or "--" + name.replace("_", "-")


def _choices(annotation) -> tuple[str, ...]:
    """The values a Literal or an Enum field takes (none for any other)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(member.value for member in annotation) if isinstance(annotation, type) and issubclass(annotation, Enum) \
        else ()


def _is_bool(annotation) -> bool:
    return annotation is bool
