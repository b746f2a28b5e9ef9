"""The embedded vLLM engine: AsyncLLM with the guard's logits processor, as a server.engine.Engine.

vLLM's own defaults apply, torch.compile included, so that an answer the guard leaves alone is the
answer `vllm serve` gives on the same model and machine (eager and compiled kernels round bf16
differently: on a 135M model that is enough to change a greedy answer). The compiled graph is
cached (vLLM's compile cache, under VLLM_CACHE_ROOT), so only a model's first start pays for it.
vLLM 0.32's own default cache (ahead-of-time artefacts) fails to load on this torch ("'function'
object has no attribute 'finalize_loading'") and compiles again at every start, so the engine asks for
the compile cache before it (VLLM_USE_AOT_COMPILE=0, unless set): the same compiled code, loaded.

For /metrics it reports the scheduler's running and waiting requests and where its logits processor
publishes the guard's step times (`stats()`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from guard import step_timing
from guard.spec import GuardSpec
from server.engine import (DecodeParams, Delta, EngineStats, EngineUnavailable, PositionLogprobs, RequestRejected,
                           TokenLogprob)

log = logging.getLogger("guard.engine")
PROCESSOR = "vllm_guard.processor:GuardLogitsProcessor"
# vLLM's CPU backend caches prefixes in blocks of 128 tokens by default: a rewind (and a chat's next
# request) would re-prefill everything after the last full block, often the whole answer so far. 32,
# the smallest block its attention kernel takes, caps that at 31 tokens (benchmarks/throughput.py
# measures the rest). A price: a prompt's blocks found in the cache may have been computed in another
# shape (decoded token by token, or prefilled in a longer prompt), which bf16 rounds differently, so a
# near tie can go another way than on a cold cache; with 128-token blocks short chats rarely fill one.
CPU_BLOCK_SIZE = 32


class SchedulerCounts:
    """A vLLM stat logger (StatLoggerBase's methods) keeping the latest running and waiting counts.
    vLLM calls `record` in this process, from the engine's output loop, after each engine step."""

    def __init__(self) -> None:
        self.running = self.waiting = 0

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            self.running = scheduler_stats.num_running_reqs
            self.waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs

    def log_engine_initialized(self) -> None:
        pass

    def log(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass


class EmbeddedEngine:
    def __init__(self, model_path: str, *, max_model_len: int, kv_cache_gib: int, enforce_eager: bool = False,
                 loras: dict[str, str] | None = None, max_lora_rank: int | None = None,
                 block_size: int | None = None):
        """`loras`: LoRA adapters this engine serves beside its model, by name (folder paths).
        `block_size`: the KV cache's block in tokens (default: CPU_BLOCK_SIZE on a CPU, vLLM's elsewhere)."""
        self.model_path = model_path
        self.max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._block_size = block_size
        self._enforce_eager = enforce_eager
        self._loras = dict(loras or {})
        self._max_lora_rank = max_lora_rank
        self._lora_requests: dict = {}
        self._llm = None
        self.tokenizer = None
        self._counts = SchedulerCounts()
        self.step_stats_path: Path | None = None  # where the engine's logits processor publishes

    async def start(self) -> None:
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        inherited = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        if inherited and inherited != str(self._kv_cache_gib):  # vLLM's legacy variable would win over the flag
            raise ValueError(f"VLLM_CPU_KVCACHE_SPACE={inherited} is set in the environment and would override "
                             f"--kv-cache-gib {self._kv_cache_gib}: unset it, or give the same size")
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")  # see the module docstring
        # Inherited by the engine process: one folder per server process, one file per engine in it.
        stats_dir = Path(tempfile.gettempdir()) / f"guard-step-stats-{os.getpid()}"
        stats_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ[step_timing.ENV] = str(stats_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        # The engine's process owns the CPU cores, its threads bound to them and spinning between steps.
        # This process's own torch work (the prompt classifier's encoder, per request) then runs on one
        # thread: two of them meet at a barrier after each op, and one waiting for a core the engine
        # holds made guarded requests' first token 100-450 ms late in bursts (0.3 ms slower when idle).
        import torch

        torch.set_num_threads(1)
        counts = self._counts
        self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, self.engine_args(),
                                            stat_loggers=[lambda config, index: counts])
        self.step_stats_path = step_timing.stats_path(stats_dir, str(self._llm.vllm_config.instance_id))
        await self._load_loras()

    def engine_args(self):
        """vLLM's engine arguments: `vllm serve`'s defaults but for the context length, the guard's
        processor, prefix caching (rewinds re-prefill the same prefix) in small blocks on a CPU,
        log-probabilities of the distribution each token is sampled from (after the guard's biases, not
        the model's raw one) and, where asked, eager and LoRA."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        lora_args = {}
        if self._loras:  # only then: LoRA support costs the base model a little per step
            lora_args = dict(enable_lora=True, max_loras=len(self._loras), max_lora_rank=self._max_lora_rank or 16)
        return AsyncEngineArgs(model=self.model_path, max_model_len=self.max_model_len, logits_processors=[PROCESSOR],
                               enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                               kv_cache_memory_bytes=self._kv_cache_gib * 2**30,
                               block_size=self._block_size or (CPU_BLOCK_SIZE if current_platform.is_cpu() else None),
                               enforce_eager=self._enforce_eager, **lora_args)

    async def _load_loras(self) -> None:
        """Load every adapter now, so a broken or mismatched one stops the start, not a request."""
        from vllm.lora.request import LoRARequest

        for number, (name, path) in enumerate(self._loras.items(), start=1):
            request = LoRARequest(name, number, path)
            try:
                await self._llm.add_lora(request)
            except Exception as exc:
                self.close()
                raise RuntimeError(f"--variant {name}: the engine could not load the LoRA adapter in {path}: "
                                   f"{str(exc).splitlines()[0]}") from None
            self._lora_requests[name] = request

    @property
    def healthy(self) -> bool:
        return self._llm is not None and not self._llm.errored

    async def health(self) -> str | None:
        return None if self.healthy else "the engine is not running"

    async def reset_prefix_cache(self) -> None:
        """Forget every cached block (for measurements that must not depend on what ran before: a
        block found in the cache was computed in another shape, which bf16 rounds differently)."""
        await self._llm.reset_prefix_cache()

    def stats(self) -> EngineStats:
        """The scheduler's running and waiting requests at the engine's last step (0 when not running)."""
        if self._llm is None:
            return EngineStats()
        return EngineStats(self._counts.running, self._counts.waiting, self.step_stats_path)

    async def shutdown(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the engine (synchronous: for scripts and for the start's own failure)."""
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
        if self.step_stats_path is not None:
            self.step_stats_path.unlink(missing_ok=True)
            try:
                self.step_stats_path.parent.rmdir()  # the last engine of this process removes the folder
            except OSError:
                pass
            self.step_stats_path = None

    async def stream(
        self, prompt_ids: list[int], params: DecodeParams, spec: GuardSpec | None, request_id: str,
        lora: str | None = None,
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        if not self.healthy:
            raise EngineUnavailable("the engine is not running")
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            seed=params.seed,
            ignore_eos=params.ignore_eos,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            logit_bias=dict(params.logit_bias) or None,
            logprobs=params.logprobs,
            skip_special_tokens=params.skip_special_tokens,
            output_kind=RequestOutputKind.DELTA,
            extra_args=spec.to_extra_args() if spec is not None else None,
        )
        finished = False
        try:
            async for output in self._llm.generate(_token_prompt(prompt_ids), sampling, request_id,
                                                   lora_request=self._lora_requests[lora] if lora else None):
                completion = output.outputs[0]
                finished = output.finished
                logprobs = None
                if params.logprobs is not None and completion.logprobs is not None:
                    logprobs = tuple(_position(token_id, candidates, params.logprobs, self.tokenizer)
                                     for token_id, candidates in zip(completion.token_ids, completion.logprobs))
                yield Delta(list(completion.token_ids), completion.text, completion.finish_reason if finished else None,
                            logprobs)
        except VLLMClientError as exc:
            raise RequestRejected(str(exc)) from None
        except Exception as exc:
            if not self.healthy:
                raise EngineUnavailable("the engine stopped") from exc
            raise
        finally:
            if not finished and self._llm is not None:
                await self._llm.abort(request_id)


@dataclass(frozen=True)
class LoraView:
    """An engine answering with one of its LoRA adapters: the engine's interface, the adapter's weights."""

    engine: EmbeddedEngine
    lora: str

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    async def start(self) -> None:
        """The engine it views is started (and shut down) as an engine of its own."""

    async def shutdown(self) -> None:
        pass

    async def health(self) -> str | None:
        return await self.engine.health()

    def stats(self) -> None:
        return None  # counted with the engine it views

    def stream(self, prompt_ids: list[int], params: DecodeParams, spec: GuardSpec | None,
               request_id: str) -> AsyncIterator[Delta]:
        return self.engine.stream(prompt_ids, params, spec, request_id, lora=self.lora)


def _position(token_id: int, candidates, count: int, tokenizer) -> PositionLogprobs:
    """vLLM's log-probabilities at one position (token id -> Logprob: the `count` most likely and the
    sampled one) as the sampled token's and the `count` most likely, most likely first."""
    def entry(candidate_id: int, logprob) -> TokenLogprob:
        text = logprob.decoded_token if logprob.decoded_token is not None else tokenizer.decode([candidate_id])
        return TokenLogprob(text, logprob.logprob)

    ranked = sorted((lp.rank, candidate_id, lp) for candidate_id, lp in candidates.items() if lp.rank <= count)
    return PositionLogprobs(entry(token_id, candidates[token_id]), tuple(entry(i, lp) for _, i, lp in ranked[:count]))


def _token_prompt(prompt_ids: list[int]):
    """An already tokenised prompt, in the form this vLLM version takes."""
    try:
        from vllm.inputs.engine import tokens_input  # vLLM >= 0.32: rendered engine input
    except ImportError:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=prompt_ids)
    return tokens_input(prompt_ids)
