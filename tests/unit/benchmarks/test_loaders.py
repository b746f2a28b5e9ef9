"""The TOFU and MUSE loaders on small fixtures written in the published formats; no network."""

import json
import sys
import types

import pytest

from benchmarks.loaders import load_muse, load_muse_verbmem, load_tofu

TOFU_ROWS = 4000  # 200 authors x 20 QA, ordered by author


def tofu_row(row: int, perturbed: bool = False) -> dict:
    item = {"question": f"What is fact {row % 20} about author {row // 20}?", "answer": f"Answer {row}."}
    if perturbed:
        item |= {"paraphrased_answer": f"Paraphrase {row}.", "paraphrased_question": "ignored",
                 "perturbed_answer": [f"Wrong {row} a.", f"Wrong {row} b.", f"Wrong {row} c."]}
    return item


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_json(path, rows):
    path.write_text(json.dumps(rows))


@pytest.fixture
def tofu(tmp_path):
    """A TOFU folder: full (JSON Lines, as on the hub), forget01_perturbed (a JSON array) and a
    retain_perturbed made of authors 5 and 7, so its authors can only come from `full`."""
    write_jsonl(tmp_path / "full.json", [tofu_row(r) for r in range(TOFU_ROWS)])
    write_json(tmp_path / "forget01_perturbed.json", [tofu_row(r, True) for r in range(3960, 4000)])
    write_jsonl(tmp_path / "retain_perturbed.json", [tofu_row(r, True) for r in [*range(100, 120), *range(140, 160)]])
    return tmp_path


def test_tofu_splits_subjects_and_fields(tofu):
    data = load_tofu(str(tofu), "forget01")
    assert data.name == "tofu-forget01"
    assert len(data.forget) == 40 and len(data.retain) == 40 and len(data.train) == TOFU_ROWS
    assert [s.id for s in data.subjects] == ["tofu-author-198", "tofu-author-199"]
    assert [qa.subject for qa in data.forget] == ["tofu-author-198"] * 20 + ["tofu-author-199"] * 20
    assert {qa.subject for qa in data.retain} == {"tofu-author-005", "tofu-author-007"}
    first = data.forget[0]
    assert first.answer == "Answer 3960." and first.paraphrased_answer == "Paraphrase 3960."
    assert first.perturbed_answers == ("Wrong 3960 a.", "Wrong 3960 b.", "Wrong 3960 c.")
    assert all(qa.key == "" for qa in data.forget + data.retain + data.train)
    assert data.train[25].subject == "tofu-author-001"


def test_tofu_policy_has_one_target_per_forget_author(tofu):
    policy = load_tofu(str(tofu), "forget01").policy()
    assert policy.target_ids == ["tofu-author-198", "tofu-author-199"]
    assert [len(t.qa) for t in policy.targets] == [20, 20]


def test_tofu_without_full_places_authors_by_position(tofu):
    (tofu / "full.json").unlink()
    data = load_tofu(str(tofu), "forget01")
    assert data.train == ()
    assert [s.id for s in data.subjects] == ["tofu-author-198", "tofu-author-199"]
    assert {qa.subject for qa in data.retain} == {"tofu-author-000", "tofu-author-001"}


def test_tofu_falls_back_to_the_plain_configs(tmp_path):
    write_jsonl(tmp_path / "forget05.jsonl", [tofu_row(r) for r in range(3800, 4000)])
    write_jsonl(tmp_path / "retain95.json", [tofu_row(r) for r in range(3800)])
    data = load_tofu(str(tmp_path), "forget05")
    assert len(data.subjects) == 10 and data.subjects[0].id == "tofu-author-190"
    assert len(data.retain) == 3800
    assert all(qa.paraphrased_answer == qa.answer and qa.perturbed_answers == () for qa in data.forget)


def test_tofu_missing_field_names_the_file_and_field(tofu):
    rows = [tofu_row(r, True) for r in range(3960, 4000)]
    del rows[3]["paraphrased_answer"]
    write_json(tofu / "forget01_perturbed.json", rows)
    with pytest.raises(ValueError, match=r"forget01_perturbed\.json: item 3 has no field 'paraphrased_answer'"):
        load_tofu(str(tofu), "forget01")


def test_tofu_missing_files_say_what_to_download(tmp_path):
    with pytest.raises(ValueError, match=r"forget10_perturbed\.json.*locuslab/TOFU"):
        load_tofu(str(tmp_path))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_tofu(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no such folder"):
        load_muse(str(tmp_path / "nowhere"))


def test_bad_split_and_corpus(tofu):
    with pytest.raises(ValueError, match="forget_split"):
        load_tofu(str(tofu), "forget20")
    with pytest.raises(ValueError, match="corpus"):
        load_muse(str(tofu), "poems")


def test_not_json_names_the_file(tofu):
    (tofu / "forget01_perturbed.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"forget01_perturbed\.json: not JSON"):
        load_tofu(str(tofu), "forget01")


def test_hub_name_without_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ValueError, match="pip install datasets"):
        load_tofu("locuslab/TOFU")


def fake_datasets(monkeypatch, tables):
    """A stand-in `datasets` module serving `tables[(name, config, split)]`, recording calls."""
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if (name, config, split) not in tables:
            raise ConnectionError("Couldn't reach 'https://huggingface.co'\nmore detail")
        return tables[(name, config, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_tofu_from_the_hub(monkeypatch):
    calls = fake_datasets(monkeypatch, {
        ("locuslab/TOFU", "forget10_perturbed", "train"): [tofu_row(r, True) for r in range(3600, 4000)],
        ("locuslab/TOFU", "retain_perturbed", "train"): [tofu_row(r, True) for r in range(400)],
        ("locuslab/TOFU", "full", "train"): [tofu_row(r) for r in range(TOFU_ROWS)],
    })
    data = load_tofu("locuslab/TOFU")
    assert len(data.subjects) == 20 and data.subjects[0].id == "tofu-author-180"
    assert len(data.forget) == 400 and len(data.retain) == 400 and len(data.train) == TOFU_ROWS
    assert ("locuslab/TOFU", "forget10_perturbed", "train") in calls


def test_hub_failure_is_one_clear_line(monkeypatch):
    fake_datasets(monkeypatch, {})
    with pytest.raises(ValueError) as error:
        load_muse("muse-bench/MUSE-News")
    message = str(error.value)
    assert "\n" not in message
    assert "cannot load muse-bench/MUSE-News (knowmem, forget_qa)" in message and "folder" in message


MUSE_FORGET = [{"question": "What year did the islands join the kingdom?", "answer": "1472"},
               {"question": "Who is the new director?", "answer": "Rain Newton-Smith"},
               {"question": "What did the coroner rule?", "answer": "She drowned after falling into cold water"}]
MUSE_RETAIN = [{"question": "Which song won the contest?", "answer": "Tattoo"}]
MUSE_VERBMEM = [{"prompt": "The minister said on Monday that", "gt": "the plan would go ahead."}]


@pytest.fixture
def muse(tmp_path):
    (tmp_path / "knowmem").mkdir()
    (tmp_path / "verbmem").mkdir()
    write_json(tmp_path / "knowmem" / "forget_qa.json", MUSE_FORGET)
    write_json(tmp_path / "knowmem" / "retain_qa.json", MUSE_RETAIN)
    write_json(tmp_path / "verbmem" / "forget.json", MUSE_VERBMEM)
    return tmp_path


def test_muse_knowmem(muse):
    data = load_muse(str(muse))
    assert data.name == "muse-news" and data.train == ()
    assert [s.id for s in data.subjects] == ["muse-news"]
    assert [qa.answer for qa in data.forget] == [r["answer"] for r in MUSE_FORGET]
    assert [qa.key for qa in data.forget] == ["1472", "Rain Newton-Smith", ""]  # long answers: no key
    assert all(qa.paraphrased_answer == qa.answer and qa.perturbed_answers == () for qa in data.forget)
    assert {qa.subject for qa in data.forget} == {"muse-news"}
    assert data.retain[0].subject != "muse-news" and data.retain[0].key == "Tattoo"
    assert data.policy().target_ids == ["muse-news"]


def test_muse_verbmem(muse):
    assert load_muse_verbmem(str(muse)) == (("The minister said on Monday that", "the plan would go ahead."),)


def test_muse_repository_layout_with_corpus_folder_and_old_retain_name(tmp_path):
    folder = tmp_path / "books" / "knowmem"
    folder.mkdir(parents=True)
    write_json(folder / "forget_qa.json", MUSE_FORGET)
    write_jsonl(folder / "retain2_qa.jsonl", MUSE_RETAIN)
    data = load_muse(str(tmp_path), "books")
    assert data.name == "muse-books" and len(data.forget) == 3 and len(data.retain) == 1


def test_muse_missing_field_names_the_file_and_field(muse):
    write_json(muse / "knowmem" / "retain_qa.json", [{"question": "Which song won?"}])
    with pytest.raises(ValueError, match=r"retain_qa\.json: item 0 has no field 'answer'"):
        load_muse(str(muse))


def test_muse_missing_split_says_what_to_download(muse):
    (muse / "knowmem" / "forget_qa.json").unlink()
    with pytest.raises(ValueError, match=r"knowmem/forget_qa\.json.*muse-bench/MUSE-News"):
        load_muse(str(muse))


def test_muse_from_the_hub(monkeypatch):
    calls = fake_datasets(monkeypatch, {
        ("muse-bench/MUSE-Books", "knowmem", "forget_qa"): MUSE_FORGET,
        ("muse-bench/MUSE-Books", "knowmem", "retain_qa"): MUSE_RETAIN,
    })
    data = load_muse("muse-bench/MUSE-Books", "books")
    assert len(data.forget) == 3 and len(data.retain) == 1
    assert calls == [("muse-bench/MUSE-Books", "knowmem", "forget_qa"),
                     ("muse-bench/MUSE-Books", "knowmem", "retain_qa")]
