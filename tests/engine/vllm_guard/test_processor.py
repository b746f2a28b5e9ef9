"""The vLLM adapter driven the way vLLM's V1 runner drives it: BatchUpdates, live output lists."""

from types import SimpleNamespace

import pytest
import torch

vllm = pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from guard import step_timing  # noqa: E402
from guard.spec import GuardSpec, compile_patterns  # noqa: E402
from vllm_guard.processor import GuardLogitsProcessor  # noqa: E402
from tests.conftest import HP_PHRASES  # noqa: E402

SPEC = GuardSpec(compile_patterns(HP_PHRASES))


@pytest.fixture(scope="module")
def processor_factory(model_dir, tokenizer):
    config = SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(model_dir), tokenizer_revision=None,
                                                          get_vocab_size=lambda: len(tokenizer)))
    return lambda: GuardLogitsProcessor(config, torch.device("cpu"), False)


def add(processor, *rows):
    processor.update_state(BatchUpdate(batch_size=len(rows), removed=[], moved=[], added=list(rows)))


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_blocks_only_in_guarded_rows(processor_factory, tokenizer):
    processor = processor_factory()
    guarded_out, plain_out = ids(tokenizer, " by J.K. Row"), ids(tokenizer, " by J.K. Row")
    add(processor, (0, SamplingParams(extra_args=SPEC.to_extra_args()), [1, 2], guarded_out),
        (1, SamplingParams(), [1, 2], plain_out))
    logits = processor.apply(torch.zeros(2, len(tokenizer)))
    ling = ids(tokenizer, "ling")[0]
    assert logits[0, ling] == float("-inf")
    assert torch.all(logits[1] == 0)


def test_follows_the_live_output_list(processor_factory, tokenizer):
    processor = processor_factory()
    output: list[int] = []
    add(processor, (0, SamplingParams(extra_args=SPEC.to_extra_args()), [1, 2], output))
    voldemort_end = ids(tokenizer, "ort")[0]
    assert processor.apply(torch.zeros(1, len(tokenizer)))[0, voldemort_end] == 0
    output.extend(ids(tokenizer, " Voldem"))  # vLLM appends sampled tokens to the same list
    processor.update_state(None)
    assert processor.apply(torch.zeros(1, len(tokenizer)))[0, voldemort_end] == float("-inf")


def test_rows_follow_moves_and_removals(processor_factory, tokenizer):
    processor = processor_factory()
    out = ids(tokenizer, " Voldem")
    add(processor, (0, SamplingParams(extra_args=SPEC.to_extra_args()), [1], out), (1, SamplingParams(), [1], []))
    processor.update_state(BatchUpdate(batch_size=2, removed=[], added=[],
                                       moved=[(0, 1, MoveDirectionality.SWAP)]))
    logits = processor.apply(torch.zeros(2, len(tokenizer)))
    end = ids(tokenizer, "ort")[0]
    assert logits[1, end] == float("-inf") and logits[0, end] == 0
    processor.update_state(BatchUpdate(batch_size=1, removed=[1], added=[], moved=[]))
    assert processor.rows == {}


def test_replayed_prompt_tail_and_resume_bans(processor_factory, tokenizer):
    processor = processor_factory()
    accepted = ids(tokenizer, " by Voldem")  # after a rewind the accepted output ends the prompt
    spec = GuardSpec(SPEC.patterns, replay_tokens=len(accepted), resume_bans=(42, 43))
    output: list[int] = []
    add(processor, (0, SamplingParams(extra_args=spec.to_extra_args()), [7, 8] + accepted, output))
    logits = processor.apply(torch.zeros(1, len(tokenizer)))
    assert logits[0, ids(tokenizer, "ort")[0]] == float("-inf")  # the partial match spans the seam
    assert logits[0, 42] == logits[0, 43] == float("-inf")  # banned where the attempt resumes ...
    output.append(ids(tokenizer, " the")[0])
    processor.update_state(None)
    assert processor.apply(torch.zeros(1, len(tokenizer)))[0, 42] == 0  # ... and only there


def test_a_phrase_rewound_for_may_not_begin_again_by_any_token(processor_factory, tokenizer):
    processor = processor_factory()
    accepted = ids(tokenizer, "He went to")
    spec = GuardSpec(SPEC.patterns, replay_tokens=len(accepted), avoid=("hogwarts",))
    output: list[int] = []
    add(processor, (0, SamplingParams(extra_args=spec.to_extra_args()), [7] + accepted, output))
    beginnings = [ids(tokenizer, text)[0] for text in (" Hog", " Ho", " H")]
    for word in (" the", " school", " of"):
        logits = processor.apply(torch.zeros(1, len(tokenizer)))[0]
        assert torch.all(logits[beginnings] == float("-inf"))  # every way into "Hogwarts", at every word
        assert logits[ids(tokenizer, " Harry")[0]] == 0 and logits[ids(tokenizer, " How")[0]] == 0  # only those
        output.append(ids(tokenizer, word)[0])
        processor.update_state(None)
    output.append(ids(tokenizer, "-")[0])  # after a separator, a bare "Hog" would begin a word too
    processor.update_state(None)
    assert processor.apply(torch.zeros(1, len(tokenizer)))[0, ids(tokenizer, "Hog")[0]] == float("-inf")


def test_the_safety_net_blocks_without_penalising(processor_factory, tokenizer):
    """A spec that penalises nothing leaves every logit but those completing a phrase untouched."""
    processor = processor_factory()
    output = ids(tokenizer, " by J.K. Row")
    add(processor, (0, SamplingParams(extra_args=GuardSpec(SPEC.patterns, 0.0, penalised=()).to_extra_args()),
                    [1], output))
    logits = processor.apply(torch.zeros(1, len(tokenizer)))
    touched = (logits[0] != 0).nonzero().flatten().tolist()
    assert ids(tokenizer, "ling")[0] in touched and torch.all(logits[0, touched] == float("-inf"))


def test_invalid_spec_is_rejected_in_the_api_process():
    with pytest.raises(ValueError, match="guard.patterns"):
        GuardLogitsProcessor.validate_params(SamplingParams(extra_args={"guard": {"patterns": "x"}}))


def test_a_spec_that_fails_in_the_worker_fails_closed(processor_factory, tokenizer):
    processor = processor_factory()
    bad = SamplingParams(extra_args={"guard": {"patterns": ["rowling"], "resume_bans": [10**9]}})
    add(processor, (0, bad, [1], []))
    logits = processor.apply(torch.zeros(1, len(tokenizer)))
    finite = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert finite == [tokenizer.eos_token_id]  # the row can only end


def test_times_only_steps_with_guarded_rows(model_dir, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv(step_timing.ENV, str(tmp_path))
    config = SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(model_dir), tokenizer_revision=None),
                             instance_id="42")
    processor = GuardLogitsProcessor(config, torch.device("cpu"), False)
    add(processor, (0, SamplingParams(), [1], []))
    processor.apply(torch.zeros(1, len(tokenizer)))  # no guarded row: not timed
    assert processor.step_times.snapshot().count == 0
    add(processor, (1, SamplingParams(extra_args=SPEC.to_extra_args()), [1], []))
    processor.apply(torch.zeros(2, len(tokenizer)))
    processor._publisher.stop()
    published = step_timing.read(tmp_path / "42.json")
    assert published.count == 1 and 0 < published.sum < 1


SCHEMA = '{"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}'


def test_a_json_grammar_masks_what_it_does_not_allow_and_survives_a_rewind(processor_factory, tokenizer):
    """The grammar follows the accepted output a rewind replays: the next attempt continues the document."""
    processor = processor_factory()
    accepted = ids(tokenizer, '{"year": 19')
    spec = GuardSpec(compile_patterns(HP_PHRASES), replay_tokens=len(accepted), json_schema=SCHEMA)
    add(processor, (0, SamplingParams(extra_args=spec.to_extra_args()), [1, 2, *accepted], []))
    logits = processor.apply(torch.zeros(1, len(tokenizer)))[0]
    allowed = {tokenizer.decode([t]) for t in torch.isfinite(logits).nonzero().flatten().tolist()}
    assert {"9", "}"} <= allowed and "Rowling" not in allowed and '"' not in allowed


def test_a_token_off_the_grammar_ends_the_row(processor_factory, tokenizer):
    processor = processor_factory()
    output: list[int] = []
    add(processor, (0, SamplingParams(extra_args=GuardSpec((), json_schema=SCHEMA).to_extra_args()), [1], output))
    output.extend(ids(tokenizer, "Hello"))
    processor.update_state(None)
    logits = processor.apply(torch.zeros(1, len(tokenizer)))[0]
    assert torch.isfinite(logits).nonzero().flatten().tolist() == [tokenizer.eos_token_id]


def test_a_model_without_an_end_token_stops_the_engine_start(tmp_path):
    """A row the guard must stop could only run on to its token limit: refused at start-up instead."""
    config = SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(tmp_path), tokenizer_revision=None,
                                                          hf_config=SimpleNamespace(eos_token_id=None)))
    with pytest.raises(ValueError, match="no end-of-sequence token"):
        GuardLogitsProcessor(config, torch.device("cpu"), False)
    config.model_config.hf_config.eos_token_id = [7, 9]  # the config's own, where the tokenizer cannot be read
    assert GuardLogitsProcessor(config, torch.device("cpu"), False).eos_ids == [7, 9]
