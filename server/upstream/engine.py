"""A `vllm serve` upstream that runs the guard's logits processor, as a server.engine.Engine.

The proxy's *full* enforcement level: `stream(prompt_ids, params, spec, request_id)` becomes a
streamed `/v1/completions` request with the prompt as token ids, the compiled spec in `vllm_xargs`
and `return_token_ids`, so the token-level guard runs inside the upstream engine and the guarded
generation loop (hold-back, detector, rewinds) runs in the proxy unchanged: `guard proxy` at this
level is `create_app` over this engine, and answers as `guard serve` does on the same model.
"""

from __future__ import annotations

from typing import AsyncIterator

from guard.spec import GuardSpec
from server.engine import DecodeParams, Delta, PositionLogprobs, TokenLogprob
from server.upstream.client import Upstream, bad_gateway
from server.protocol.upstream_shapes import TokenChunk


class UpstreamEngine:
    def __init__(self, url: str, model: str, tokenizer, max_model_len: int, *, api_key: str | None = None,
                 timeout: float = 30.0):
        self.url, self.model, self.tokenizer, self.max_model_len = url, model, tokenizer, max_model_len
        self._api_key, self._timeout = api_key, timeout
        self.upstream: Upstream | None = None

    async def start(self) -> None:
        """Open the connection pool (on the loop that serves)."""
        self.upstream = Upstream(self.url, self._api_key, self._timeout)

    async def shutdown(self) -> None:
        if self.upstream is not None:
            await self.upstream.aclose()

    async def health(self) -> str | None:
        return self.upstream.problem(await self.upstream.failing())

    def stats(self) -> None:
        return None  # the engine runs in the upstream's process

    async def stream(self, prompt_ids: list[int], params: DecodeParams, spec: GuardSpec | None,
                     request_id: str) -> AsyncIterator[Delta]:
        body = {"model": self.model, "prompt": prompt_ids, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "stream": True,
                "return_token_ids": True, "skip_special_tokens": params.skip_special_tokens, "request_id": request_id}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.frequency_penalty or params.presence_penalty:
            body.update(frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty)
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        if spec is not None:
            body["vllm_xargs"] = spec.to_vllm_xargs()
        answer = request_id.rpartition("-")[0] or request_id  # generation names attempts ANSWER-N
        async with self.upstream.stream("/completions", body, TokenChunk, affinity=answer) as events:
            async for event in events:
                if not event["choices"]:
                    continue  # a usage-only event
                choice = event["choices"][0]
                token_ids = choice["token_ids"]
                logprobs = _logprobs(choice.get("logprobs"), len(token_ids), params.logprobs)
                yield Delta(list(token_ids), choice.get("text") or "", choice.get("finish_reason"), logprobs)


def _logprobs(given, tokens: int, count: int | None) -> tuple[PositionLogprobs, ...] | None:
    """A completions event's `logprobs` (tokens, token_logprobs, top_logprobs: token text -> logprob)
    as one PositionLogprobs per token. The upstream's logprobs mode decides which distribution they
    describe: run it with `--logprobs-mode processed_logprobs` for the one the guard sampled from."""
    if count is None:
        return None
    try:
        positions = tuple(
            PositionLogprobs(TokenLogprob(token, float(logprob)), tuple(
                TokenLogprob(text, float(value))
                for text, value in sorted((top or {}).items(), key=lambda item: -item[1])[:count]))
            for token, logprob, top in zip(given["tokens"], given["token_logprobs"], given["top_logprobs"],
                                           strict=True))
    except (KeyError, TypeError, ValueError):
        raise bad_gateway("the upstream's logprobs are not in the completions API's shape") from None
    if len(positions) != tokens:
        raise bad_gateway(f"the upstream gave logprobs for {len(positions)} of {tokens} tokens")
    return positions
