"""`guard proxy` at the bias and filter levels: requests relayed to an upstream that runs none of our code.

The request goes on as the client wrote it (unknown fields included), plus, at the bias level, a
`logit_bias` against the entry tokens of the forbidden spans (guard.logit_bias). Every answer then
passes the guarded-text state machine (guard.guarded_stream) as the output filter
(server.serving.relay.output_filter): the upstream gives text, not tokens, so a violation cannot be
rewound and is cut before (`content_filter`).
- streamed: the upstream's own events go out as they are, each once the machine has released its
  text (nothing undecided is sent, nothing sent is taken back); a cut ends the choice with the text
  before the violation and a finish event of ours;
- whole: the upstream's own reply, judged whole; cut, its text ends before the violation (with
  `--retry-on-leak` at the bias level, the question is first asked again with every entry at -100).
Each choice of several is filtered on its own, and a cut one ends alone. The arguments of the
upstream's tool calls are read as text after the content: a leak in them drops the choice's calls
(whole), or ends the stream of them before the fragment that holds it. Logprobs pass the same
filter: an alternative the machine would not release after the answer so far is dropped (the
upstream is asked for a few spare ones, so the client keeps its count), and a cut answer ends with
the last whole token they list. Only a policy with nothing to enforce on a request leaves it untouched.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi.responses import JSONResponse, Response

from guard.guarded_stream import GuardedStream
from guard.logit_bias import LogitBiases
from runtime.restrictions import build_restrictions
from server.protocol import upstream_replies as replies
from server.protocol.sse import sse_response
from server.protocol.upstream_shapes import event_shape, reply_shape
from server.serving.base import MAX_LOGPROBS, SPARE_ALTERNATIVES, CompletionJob, HealthReport
from server.serving.decisions import Decisions
from server.serving.relay.output_filter import filtered_events, judged_choice
from server.settings import Enforcement, ProxySettings
from server.state.live_policy import LivePolicy
from server.upstream.client import Upstream, bad_gateway
from server.upstream.probe import UpstreamModel


@asynccontextmanager
async def relay_serving(settings: ProxySettings, live: LivePolicy, found: UpstreamModel,
                        decisions: Decisions) -> AsyncIterator["RelayServing"]:
    """The relay in front of the upstream as server.upstream.probe found it (its model, tokenizer and
    level), the policy built first; the upstream's connections closed at the end."""
    upstream = Upstream(settings.upstream, settings.upstream_key, settings.upstream_timeout)
    try:
        tokenizer = found.tokenizer if found.level == Enforcement.BIAS else None
        await live.start(lambda policy, version: build_restrictions(settings, policy, tokenizer, version))
        biases = None
        if found.level == Enforcement.BIAS:
            from transformers import AutoTokenizer

            biases = LogitBiases(AutoTokenizer.from_pretrained(found.tokenizer), settings.max_logit_bias)
        yield RelayServing(settings, upstream, found.level, found.model, live, decisions, biases)
    finally:
        await upstream.aclose()


@dataclass
class RelayServing:
    settings: ProxySettings
    upstream: Upstream
    level: Enforcement  # BIAS or FILTER
    model: str  # the upstream's (first) model
    policy: LivePolicy
    decisions: Decisions
    biases: LogitBiases | None = None  # at the bias level

    async def health(self) -> HealthReport:
        failing = await self.upstream.failing()
        return HealthReport(self.upstream.problem(failing),  # not one upstream answers
                            {"model": self.model, "upstream": self.settings.upstream, "enforcement": self.level.value,
                             "upstreams_failing": failing})

    async def models(self) -> dict[str, Any]:
        return await self.upstream.get("/models")

    async def complete(self, job: CompletionJob) -> Response:
        await self.decisions.classify(job, self.policy.restrictions)
        if job.body.stream:
            return await self._stream(job)
        return JSONResponse(await self._whole(job), headers=job.headers)

    def _upstream_body(self, job: CompletionJob, strongest: bool = False) -> dict:
        raw, restriction, count = job.raw, job.restriction, job.body.logprobs_count
        if count is not None and restriction.detector is not None:
            # A few spare alternatives, to stand in for those the filter drops.
            raw = {**raw, replies.logprobs_field(job.kind): min(MAX_LOGPROBS, count + SPARE_ALTERNATIVES)}
        if self.biases is None or restriction.spec is None:
            return raw
        guard_bias = self.biases.for_spec(restriction.spec, strongest)
        if not guard_bias:
            return raw
        client_bias = {str(k): v for k, v in (raw.get("logit_bias") or {}).items()}
        return {**raw, "logit_bias": {**client_bias, **{t: min(v, client_bias.get(t, 0.0))
                                                         for t, v in guard_bias.items()}}}

    async def _stream(self, job: CompletionJob) -> Response:
        """Open the upstream stream before answering, so that its failure is a proper HTTP error; then
        relay it through the output filter. A failure once streaming is reported in-band (server.protocol.sse)."""
        stack = AsyncExitStack()
        try:
            events = await stack.enter_async_context(
                self.upstream.stream(replies.path(job.kind), self._upstream_body(job), event_shape(job.kind)))
            first = await anext(events)
        except StopAsyncIteration:
            await stack.aclose()
            raise bad_gateway("the stream ended before its first event") from None
        except BaseException:
            await stack.aclose()
            raise
        job.mark("first_chunk")

        async def relayed() -> AsyncIterator[Any]:
            async def replay() -> AsyncIterator[Any]:
                yield first
                async for event in events:
                    yield event
            async with stack:
                if job.restriction.detector is None:
                    async for event in replay():
                        yield event
                    return
                async for event in filtered_events(job, replay()):
                    yield event
                    self.decisions.record(job)
                self.decisions.record(job)
        return sse_response(relayed(), job.headers)

    async def _whole(self, job: CompletionJob) -> dict:
        """A whole answer, judged whole; cut by the filter, it is asked once more fully biased if so configured."""
        reply, machines = await self._judged(job, strongest=False)
        if (any(m.violations for m in machines) and self.settings.retry_on_leak
                and self.biases is not None and job.restriction.spec is not None):
            reply, machines = await self._judged(job, strongest=True)
        for choice, machine, answer in zip(job.choices, machines, reply["choices"]):
            choice.text, choice.violations = machine.text, tuple(machine.violations)
            choice.finish_reason = answer["finish_reason"]
        self.decisions.record(job)
        return reply

    async def _judged(self, job: CompletionJob, strongest: bool) -> tuple[dict, list[GuardedStream]]:
        """The upstream's reply, each choice cut before a violation; and the machines that judged them
        (none: nothing to guard)."""
        reply = await self.upstream.post(replies.path(job.kind), self._upstream_body(job, strongest),
                                         self.settings.max_request_seconds, reply_shape(job.kind))
        detector, count = job.restriction.detector, job.body.logprobs_count
        if detector is None:
            return reply, []
        judged = await asyncio.to_thread(lambda: [  # off the event loop: a long answer takes a while to read
            judged_choice(job.kind, detector, choice, count) for choice in reply["choices"]])
        return {**reply, "choices": [choice for choice, _ in judged]}, [machine for _, machine in judged]
