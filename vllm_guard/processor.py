"""The adapter that plugs the guard into vLLM's V1 logits-processor interface.

Register it with `logits_processors=["vllm_guard.processor:GuardLogitsProcessor"]` (embedded
engine) or `vllm serve MODEL --logits-processors vllm_guard.processor:GuardLogitsProcessor`.
A request is guarded when its `SamplingParams.extra_args` (`vllm_xargs` over HTTP) holds a spec
(`guard.spec.GuardSpec`); others pass untouched.

Runs in the engine's worker process. An exception escaping `update_state` or `apply` kills the
engine, so specs are validated in `validate_params` (API process, HTTP 400), and anything that
still goes wrong here fails closed: the row may only end (EOS), never continue unguarded.

The time it spends per step on batches with guarded rows (`update_state` and `apply` together)
goes into a histogram that `guard.step_timing` hands to the server; steps without one are not timed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from cachetools import LRUCache
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from vllm_guard.grammars import Grammars, advance
from vllm_guard.logits_ops import apply_sparse_bias, gather_row_biases
from guard.loops import MAX_UNIT
from guard.matcher import Matcher, MatchState
from guard.spec import GuardSpec
from guard.step_timing import StepHistogram, publish_from_env
from guard.vocab import TokenIndex

log = logging.getLogger("guard.vllm")
_MATCHER_CACHE = 32


@lru_cache(maxsize=4)
def _indexed_tokenizer(path: str, revision: str | None) -> tuple[Any, TokenIndex]:
    """The tokenizer and its index (about a second to build), once per process: every processor of
    the same model shares them (read-only)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return tokenizer, TokenIndex.from_tokenizer(tokenizer)


@dataclass
class _CompiledMatcher:
    matcher: Matcher
    tensors: dict[MatchState, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class _Row:
    compiled: _CompiledMatcher | None  # None: the guard failed for this row, force it to end
    state: MatchState
    output_ids: list[int]  # vLLM's live list of this request's output tokens
    resume_bans: tuple[int, ...] = ()  # banned at the first step only (a rewind's resume position)
    grammar: Any = None  # the answer's JSON grammar matcher (guard.grammar), if it must be JSON
    avoided: dict[bool, tuple[torch.Tensor, torch.Tensor]] | None = None  # GuardLogitsProcessor._avoided
    replayed: tuple[int, ...] = ()  # the accepted output replayed from the prompt, its last tokens
    seen: int = 0

    def recent_ids(self) -> list[int]:
        """The answer's last tokens, across a rewind's seam."""
        return [*self.replayed, *self.output_ids[max(0, self.seen - 3 * MAX_UNIT):self.seen]][-3 * MAX_UNIT:]

    def catch_up(self) -> None:
        while self.compiled is not None and self.seen < len(self.output_ids):
            token_id = self.output_ids[self.seen]
            if token_id < 0:  # placeholder of a token not sampled yet
                return
            self.state = self.compiled.matcher.advance(self.state, token_id)
            if self.grammar is not None:
                try:
                    advance(self.grammar, [token_id])
                except ValueError:
                    self.compiled = None  # off the grammar: end it (the server fails it closed)
                    return
            self.seen += 1


class GuardLogitsProcessor(LogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params) -> None:
        GuardSpec.from_extra_args(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.rows: dict[int, _Row] = {}
        self._compiled: LRUCache[tuple, _CompiledMatcher] = LRUCache(_MATCHER_CACHE)
        self.index: TokenIndex | None = None
        self.eos_ids: list[int] = []
        self._tokenizer, self._vocab_size = None, 0
        self._grammars: Grammars | None = None  # built at the first request that asks for JSON
        self.step_times = StepHistogram()
        self._update_seconds = 0.0  # this step's update_state, added to its apply
        self._publisher = publish_from_env(self.step_times, str(getattr(vllm_config, "instance_id", "") or "engine"))
        try:
            config = vllm_config.model_config
            self._tokenizer, self.index = _indexed_tokenizer(config.tokenizer, config.tokenizer_revision)
            self._vocab_size = config.get_vocab_size()  # the logits' width, padding included
        except Exception:  # noqa: BLE001 - never kill the engine; guarded rows fail closed
            log.exception("guard: cannot index the tokenizer; guarded requests will end at once")
        self.eos_ids = _end_ids(vllm_config.model_config, self._tokenizer)
        if not self.eos_ids:  # a row the guard must stop could only be stopped by its token limit
            raise ValueError("guard: the model names no end-of-sequence token, so the guard could not end an answer "
                             "it must stop; give the model's config or tokenizer an eos_token_id")

    def is_argmax_invariant(self) -> bool:
        return False

    # -- batch bookkeeping -----------------------------------------------------------------
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        started = time.perf_counter()
        process_dict_updates(self.rows, batch_update, self._new_row)
        for row in self.rows.values():
            row.catch_up()
        self._update_seconds = time.perf_counter() - started

    def _new_row(self, params, prompt_ids, output_ids) -> _Row | None:
        try:
            vocab = len(self.index) if self.index else None
            spec = GuardSpec.from_extra_args(params.extra_args, vocab_size=vocab)
        except Exception:  # noqa: BLE001
            log.exception("guard: invalid spec reached the worker")
            return _Row(None, MatchState((), True), output_ids)
        if spec is None:
            return None
        try:
            compiled = self._compile(spec)
            prompt = prompt_ids or []
            replayed = prompt[len(prompt) - spec.replay_tokens :]  # accepted output ending the prompt
            grammar = None
            if spec.json_schema is not None:
                if self._grammars is None:
                    self._grammars = Grammars(self._tokenizer, self._vocab_size)
                grammar = self._grammars.matcher(spec.json_schema, replayed)
            return _Row(compiled, compiled.matcher.replay(replayed), output_ids, spec.resume_bans, grammar,
                        self._avoided(spec.avoid), tuple(replayed[-3 * MAX_UNIT:]))
        except Exception:  # noqa: BLE001
            log.exception("guard: cannot compile a spec")
            return _Row(None, MatchState((), True), output_ids)

    def _avoided(self, phrases: tuple[str, ...]) -> dict[bool, tuple[torch.Tensor, torch.Tensor]] | None:
        """The bans of every token that would begin one of `phrases`, where the next letter starts a
        word (True) and where it does not; None: nothing avoided."""
        if not phrases:
            return None
        bans = {}
        for boundary in (True, False):
            ids = set()
            for phrase in phrases:
                completing, beginning = self.index.pattern_starts(phrase, boundary)
                ids |= completing | beginning.keys()
            bans[boundary] = self._bans(sorted(ids))
        return bans

    def _bans(self, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """A sparse bias of -inf on `token_ids`."""
        return (torch.tensor(token_ids, dtype=torch.long, device=self.device),
                torch.full((len(token_ids),), float("-inf"), device=self.device))

    def _compile(self, spec: GuardSpec) -> _CompiledMatcher:
        if self.index is None:
            raise RuntimeError("no token index")
        compiled = self._compiled.get(spec.compile_key)
        if compiled is None:
            compiled = _CompiledMatcher(Matcher.for_spec(spec, self.index))
            self._compiled[spec.compile_key] = compiled
        return compiled

    # -- the per-step write ----------------------------------------------------------------
    def apply(self, logits: torch.Tensor) -> torch.Tensor:  # [B, V]
        if not self.rows:
            return logits
        started = time.perf_counter()
        try:
            logits = self._apply(logits)
        except Exception:  # noqa: BLE001 - fail closed for every guarded row
            log.exception("guard: per-step failure; ending guarded rows")
            for index in self.rows:
                self._force_end(logits, index)
        self.step_times.observe(self._update_seconds + time.perf_counter() - started)
        self._update_seconds = 0.0
        return logits

    def _apply(self, logits: torch.Tensor) -> torch.Tensor:
        row_indices, biases, grammar_rows = [], [], []
        for index, row in self.rows.items():
            row.catch_up()
            if row.compiled is None:
                self._force_end(logits, index)
                continue
            if row.grammar is not None:
                grammar_rows.append(index)
            row_indices.append(index)
            biases.append(self._bias_tensors(row))
            if row.avoided is not None:
                row_indices.append(index)
                biases.append(row.avoided[row.state.at_boundary])
            matcher = row.compiled.matcher
            if matcher.penalised and (loop_bans := matcher.loop_bans(row.recent_ids(), row.state.at_boundary)):
                row_indices.append(index)
                biases.append(self._bans(loop_bans))
            if row.resume_bans and not row.output_ids:
                row_indices.append(index)
                biases.append(self._bans(row.resume_bans))
        if grammar_rows:
            self._grammars.mask(logits, grammar_rows, [self.rows[i].grammar for i in grammar_rows])
        rows, cols, values = gather_row_biases(row_indices, biases, self.device)
        logits = apply_sparse_bias(logits, rows, cols, values)
        for index in grammar_rows:  # the grammar and the guard together left nothing: end it
            if not torch.isfinite(logits[index]).any():
                self._force_end(logits, index)
        return logits

    def _bias_tensors(self, row: _Row) -> tuple[torch.Tensor, torch.Tensor]:
        cache = row.compiled.tensors
        tensors = cache.get(row.state)
        if tensors is None:
            bias = row.compiled.matcher.bias(row.state)
            tensors = (
                torch.tensor(bias.token_ids, dtype=torch.long, device=self.device),
                torch.tensor(bias.values, dtype=torch.float32, device=self.device),
            )
            if len(cache) > 50_000:
                cache.clear()
            cache[row.state] = tensors
        return tensors

    def _force_end(self, logits: torch.Tensor, index: int) -> None:
        keep = logits[index, self.eos_ids].clone()
        logits[index] = float("-inf")
        logits[index, self.eos_ids] = torch.where(torch.isfinite(keep), keep, 0.0)  # masked too: still the end


def _end_ids(model_config, tokenizer) -> list[int]:
    """The model's end-of-sequence token ids: its config's (one or several), else its tokenizer's."""
    ids = getattr(getattr(model_config, "hf_config", None), "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = tokenizer.eos_token_id
    return [ids] if isinstance(ids, int) else list(ids or [])
