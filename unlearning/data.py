"""Forget and retain data: reading TOFU-style JSONL, template answers, and tokenised batches.

A line is `{"question", "answer"}` (TOFU; extra fields are ignored) or `{"text"}` (MUSE-style
passages). A question is rendered with the model's chat template, so unlearning acts on the way the
model is served; a passage is split into a prefix (the prompt) and its continuation (the answer).
Labels carry the answer's token ids and IGNORE on prompt and padding positions.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from guard.chat import render_chat
from unlearning.losses import IGNORE

PASSAGE_PREFIX_WORDS = 0.3  # share of a passage's words given as its prompt


class DataError(ValueError):
    """A forget or retain file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str
    chat: bool  # True: `prompt` is a question for the chat template; False: plain text prefix


def load_items(path: str | Path, role: str = "forget") -> list[Item]:
    """Read a JSONL file of questions/answers or passages. Raises DataError naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--{role}: {path} is not a file")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"--{role}: {path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg})") from None
        items.append(_item(record, where))
    if not items:
        raise DataError(f"--{role}: {path} holds no examples")
    return items


def _item(record, where: str) -> Item:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with \"question\" and \"answer\", or \"text\"")
    if "question" in record or "answer" in record:
        for field in ("question", "answer"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: \"{field}\" must be a non-empty string")
        return Item(record["question"].strip(), record["answer"].strip(), chat=True)
    text = record.get("text")
    if not isinstance(text, str) or len(text.split()) < 2:
        raise DataError(f"{where}: needs \"question\" and \"answer\", or a \"text\" of two words or more")
    words = text.split()
    cut = max(1, round(len(words) * PASSAGE_PREFIX_WORDS))
    return Item(" ".join(words[:cut]), " " + " ".join(words[cut:]), chat=False)


def refusal_templates() -> list[str]:
    """FLAT's template answers: the shipped list of "I don't know"-style replies."""
    text = resources.files("unlearning").joinpath("data/refusals.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def with_template_answers(items: list[Item], seed: int) -> list[Item]:
    """Each item's template counterpart: same prompt, a refusal drawn with `seed`."""
    rng = random.Random(seed)
    templates = refusal_templates()
    return [Item(item.prompt, (" " if not item.chat else "") + rng.choice(templates), item.chat) for item in items]


def with_random_answers(items: list[Item], answers: list[Item], seed: int) -> list[Item]:
    """Each item's random relabelling (SalUn): same prompt, the answer of one of `answers` drawn with `seed`."""
    rng = random.Random(seed)
    return [Item(item.prompt, rng.choice(answers).answer, item.chat) for item in items]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode(tokenizer, item: Item, max_length: int) -> Encoded:
    """Prompt and answer tokens; the answer ends with the end-of-turn token so the model learns to stop."""
    if item.chat:
        prompt_ids = render_chat(tokenizer, [{"role": "user", "content": item.prompt}])
    else:
        prompt_ids = tokenizer.encode(item.prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(item.answer, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    prompt_ids = prompt_ids[-max(1, max_length - len(answer_ids)):]  # keep the end of a long prompt
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return Encoded(ids, labels)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, and labels with IGNORE on padding."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
