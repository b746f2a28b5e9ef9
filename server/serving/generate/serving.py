"""Serving over engines: each choice generated token by token under the guard (generation), whole or
streamed (events). `guard serve` serves its embedded engine, its LoRA views and full variants;
`guard proxy` at its full level an upstream vLLM that runs the guard's logits processor."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi.responses import JSONResponse, Response

from server.engine import DecodeParams, Engine
from server.protocol import responses
from server.protocol.errors import OpenAIError, bad_request
from server.protocol.requests import ChatCompletionRequest, CompletionRequest, Reader
from server.protocol.sse import sse_response
from server.serving.base import CompletionJob, HealthReport
from server.serving.decisions import Decisions
from server.serving.generate.events import first_chunk, merged, streamed
from server.serving.generate.generation import Chunk, generate_guarded
from server.settings import GuardSettings
from server.state.live_policy import LivePolicy


@dataclass(frozen=True)
class ServedModel:
    engine: Engine
    guarded: bool
    root: str | None = None  # the variant's folder; None for the base model


HealthFields = Callable[[], Awaitable[dict[str, Any]]]


async def no_more_health() -> dict[str, Any]:
    return {}


@dataclass
class EngineServing:
    settings: GuardSettings
    engines: list[Engine]  # every engine the app started
    models_served: dict[str, ServedModel]  # every name in /v1/models
    policy: LivePolicy
    served_model: str  # the base model's name
    decisions: Decisions
    more_health: HealthFields = no_more_health  # more for /health, asked at each call (a proxy: its upstreams)

    async def health(self) -> HealthReport:
        problems = [problem for engine in self.engines if (problem := await engine.health()) is not None]
        return HealthReport(problems[0] if problems else None,
                            {"model": self.served_model, "models": list(self.models_served), **await self.more_health()})

    async def models(self) -> dict[str, Any]:
        return responses.ModelList(data=[
            responses.ModelCard(id=name, created=responses.now(), owned_by="guard", guarded=served.guarded,
                                root=served.root or self.served_model,
                                parent=None if served.root is None else self.served_model)
            for name, served in self.models_served.items()]).model_dump()

    async def complete(self, job: CompletionJob) -> Response:
        """A plain variant (`served.guarded` False) answers without the guard: weight-level unlearning alone."""
        served = self._served(job.body)
        tokenizer = served.engine.tokenizer
        readers = job.body.tool_call_readers(self.settings.tool_call_parser, tokenizer)
        job.prompt_ids = await asyncio.to_thread(job.body.prompt_ids, tokenizer)  # off the event loop: seconds, if long
        job.params = _decode_params(served.engine, job, readers)
        if served.guarded:
            await self.decisions.classify(job, self.policy.restrictions)
        # Each choice generated and guarded on its own; with a seed, choice i samples with seed + i, as vLLM's do.
        params, restriction = job.params, job.restriction
        choices = [generate_guarded(served.engine, job.prompt_ids, params if i == 0 or params.seed is None else
                                    dataclasses.replace(params, seed=params.seed + i), f"{job.id}-{i}",
                                    restriction.detector, restriction.spec, self.settings.max_rewinds)
                   for i in range(job.body.n)]
        if job.body.stream:
            chunks = merged(choices)
            first = await first_chunk(chunks)  # errors before the first byte become proper HTTP errors
            job.mark("first_chunk")
            return sse_response(streamed(job, first, chunks, readers, self.decisions), job.headers)
        return JSONResponse(await self._whole(job, choices, readers), headers=job.headers)

    def _served(self, body: ChatCompletionRequest | CompletionRequest) -> ServedModel:
        """The model that answers `body`, whose fields are all ones this server honours or ignores by design."""
        if (unknown := body.unknown_field()) is not None:
            raise bad_request(f"{unknown}: is not a field this server honours (OpenAI's API defines no such field)",
                              param=unknown)
        if body.model not in self.models_served:
            raise OpenAIError(404, f"The model `{body.model}` does not exist; this server serves "
                              f"{', '.join(f'`{name}`' for name in self.models_served)}.", param="model",
                              code="model_not_found")
        return self.models_served[body.model]

    async def _whole(self, job: CompletionJob, choices, readers: list[Reader] | None) -> dict[str, Any]:
        answers: list[list[Chunk]] = [[] for _ in choices]
        try:
            async with asyncio.timeout(self.settings.max_request_seconds), aclosing(merged(choices)) as chunks:
                async for index, chunk in chunks:
                    answers[index].append(chunk)
        except TimeoutError:
            raise OpenAIError(504, "generation timed out", type="server_error") from None
        results, readings = [], [] if readers else None
        for choice, parts in zip(job.choices, answers):
            last = parts[-1]
            choice.text, choice.violations = "".join(p.text for p in parts), last.violations
            choice.finish_reason, choice.completion_tokens = last.finish_reason, last.completion_tokens
            positions = tuple(lp for part in parts for lp in part.logprobs) if job.params.logprobs is not None else None
            finish_reason = last.finish_reason
            if readers:  # the text read as content and calls; a finish reason of tool calls, where it made any
                readings.append(readers[choice.index].whole(choice.text))
                finish_reason = readers[choice.index].finish_reason(finish_reason)
            results.append((choice.text, finish_reason, responses.logprobs(job.kind, positions)))
        self.decisions.record(job)
        self.decisions.tokens(job)
        return responses.whole(job.kind, job.id, job.body.model, results,
                               responses.usage(job.prompt_tokens, job.completion_tokens), readings).model_dump()


def _decode_params(engine: Engine, job: CompletionJob, readers: list[Reader] | None) -> DecodeParams:
    """The job's decoding parameters, checked against the model: its context, its vocabulary."""
    body, limit, prompt_tokens = job.body, engine.max_model_len, job.prompt_tokens
    room = limit - prompt_tokens
    if room <= 0:
        raise bad_request(f"This model's maximum context length is {limit} tokens; the prompt has "
                          f"{prompt_tokens}.", param=body.prompt_field, code="context_length_exceeded")
    max_tokens = body.token_limit or room
    if max_tokens > room:
        raise bad_request(f"{body.token_limit_field}: {max_tokens} plus the prompt's {prompt_tokens} tokens exceeds "
                          f"the context length of {limit}", param=body.token_limit_field, code="context_length_exceeded")
    params = body.decode_params(max_tokens)
    if readers and not readers[0].skip_special_tokens:
        params = dataclasses.replace(params, skip_special_tokens=False)
    if params.logit_bias:  # only then: the vocabulary's size is not free to ask for
        highest, vocabulary = max(token for token, _ in params.logit_bias), len(engine.tokenizer)
        if highest >= vocabulary:
            raise bad_request(f"logit_bias: token id {highest} is outside the model's vocabulary of {vocabulary}",
                              param="logit_bias")
    return params
