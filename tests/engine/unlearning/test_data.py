"""Reading forget/retain JSONL (TOFU and MUSE shapes), template answers, and label masking."""

from __future__ import annotations

import json

import pytest

from unlearning.data import DataError, Item, collate, encode, load_items, refusal_templates, with_template_answers
from unlearning.losses import IGNORE


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tofu_and_passage_lines(tmp_path):
    path = write(tmp_path, [
        json.dumps({"question": "Who is X?", "answer": "X is a writer.", "paraphrased_answer": "ignored"}),
        "",
        json.dumps({"text": "one two three four five six seven eight nine ten"}),
    ])
    qa, passage = load_items(path)
    assert qa == Item("Who is X?", "X is a writer.", chat=True)
    assert passage == Item("one two three", " four five six seven eight nine ten", chat=False)


@pytest.mark.parametrize("lines, message", [
    ([], "holds no examples"),
    (["{not json"], "line 1: not JSON"),
    (['["a list"]'], "line 1: expected an object"),
    (['{"question": "Q?"}'], 'line 1: "answer" must be a non-empty string'),
    (['{"question": "Q?", "answer": "A."}', '{"question": "", "answer": "A."}'], 'line 2: "question" must be'),
    (['{"prompt": "Q?", "completion": "A."}'], 'needs "question" and "answer", or a "text"'),
    (['{"text": "single"}'], "two words or more"),
])
def test_bad_files_name_the_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        load_items(write(tmp_path, lines), "forget")


def test_a_missing_file_names_the_option(tmp_path):
    with pytest.raises(DataError, match="--retain: .* is not a file"):
        load_items(tmp_path / "nope.jsonl", "retain")


def test_template_answers_are_shipped_refusals_drawn_by_seed():
    items = [Item(f"Q{i}?", "A.", chat=True) for i in range(6)]
    first, again = with_template_answers(items, seed=1), with_template_answers(items, seed=1)
    assert first == again
    assert [t.prompt for t in first] == [i.prompt for i in items]
    assert all(t.answer in refusal_templates() for t in first)
    assert len(refusal_templates()) >= 10


def test_encode_masks_the_prompt_and_collate_masks_padding(tokenizer):
    long = encode(tokenizer, Item("Who wrote it?", "Somebody did, long ago.", chat=True), max_length=256)
    short = encode(tokenizer, Item("Hi", " there", chat=False), max_length=256)
    answer = tokenizer.encode("Somebody did, long ago.", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert [t for t in long.labels if t != IGNORE] == answer
    assert long.input_ids[-len(answer):] == answer
    assert "<|im_start|>user" in tokenizer.decode(long.input_ids)  # the chat template is used for questions
    batch = collate([long, short], pad_id=0)
    n = len(short.input_ids)
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert batch["labels"][1, n:].eq(IGNORE).all()


def test_encode_keeps_the_answer_when_the_prompt_is_too_long(tokenizer):
    encoded = encode(tokenizer, Item("word " * 500, "The answer.", chat=True), max_length=64)
    assert len(encoded.input_ids) <= 64
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE]).startswith("The answer.")
