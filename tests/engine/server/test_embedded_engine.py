"""The embedded engine is configured as `vllm serve` is by default, so that an answer the guard leaves
alone is the answer vLLM gives. The end-to-end tests compare the two with every engine eager
(tests/support/servers.py, EAGER); this test keeps guard serve's default (compiled) configuration
vLLM's own: the same compilation, dtype, scheduler and cache settings, field for field."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from server.engines.embedded import PROCESSOR, EmbeddedEngine

# What guard serve sets on purpose; none of it changes how the model computes a token. (logprobs_mode:
# a client's logprobs describe the distribution a token was sampled from, the guard's biases applied;
# block_size: the prefix cache's granularity on a CPU, the end-to-end tests compare answers with it.)
DELIBERATE = {"max_model_len", "logits_processors", "enable_prefix_caching", "logprobs_mode", "kv_cache_memory_bytes",
              "block_size"}


def vllm_serve_args(*argv: str):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return AsyncEngineArgs.from_cli_args(make_arg_parser(FlexibleArgumentParser()).parse_args(list(argv)))


def differences(ours, theirs) -> set[str]:
    """Fields set differently; unset on both sides (None, False, "") is no difference."""
    return {f.name for f in dataclasses.fields(ours)
            if getattr(ours, f.name) != getattr(theirs, f.name)
            and not (getattr(ours, f.name) in (None, False, "") and getattr(theirs, f.name) in (None, False, ""))}


def test_guard_serves_default_engine_is_vllm_serves_default(tmp_path):
    ours = EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1).engine_args()
    theirs = vllm_serve_args("--model", str(tmp_path))
    assert differences(ours, theirs) - {"mm_device_do_normalize"} <= DELIBERATE  # (that one: images only)
    assert ours.logits_processors == [PROCESSOR] and ours.enable_prefix_caching and not ours.enforce_eager
    assert ours.compilation_config == theirs.compilation_config


def test_eager_is_vllm_serves_eager(tmp_path):
    ours = EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1, enforce_eager=True).engine_args()
    theirs = vllm_serve_args("--model", str(tmp_path), "--enforce-eager")
    assert differences(ours, theirs) - {"mm_device_do_normalize"} <= DELIBERATE


def test_the_block_is_32_tokens_on_a_cpu_unless_given(tmp_path):
    """Where the prefix cache's granularity comes from (the tests give vLLM's CPU default, 128)."""
    assert EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1).engine_args().block_size == 32
    given = EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1, block_size=128).engine_args()
    theirs = vllm_serve_args("--model", str(tmp_path), "--block-size", "128")
    assert given.block_size == 128 and "block_size" not in differences(given, theirs)


def test_the_check_can_fail(tmp_path):
    ours = EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1, enforce_eager=True).engine_args()
    assert "enforce_eager" in differences(ours, vllm_serve_args("--model", str(tmp_path)))


def test_an_inherited_kv_cache_size_cannot_silently_override_the_flag(tmp_path, monkeypatch):
    """vLLM's legacy VLLM_CPU_KVCACHE_SPACE wins over the engine argument: a different one stops the start."""
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    with pytest.raises(ValueError, match="VLLM_CPU_KVCACHE_SPACE=3 .* --kv-cache-gib 1"):
        asyncio.run(EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=1).start())
    assert EmbeddedEngine(str(tmp_path), max_model_len=2048, kv_cache_gib=3).engine_args().kv_cache_memory_bytes == 3 * 2**30
