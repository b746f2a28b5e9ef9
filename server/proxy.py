"""`guard proxy`: the same HTTP API as `guard serve`, in front of an OpenAI-compatible server someone else runs.

The classifier and span extraction run here; how the restriction reaches the generation depends on
what the upstream allows, one enforcement level per upstream, chosen at start-up
(server.upstream.probe) and reported in /health:
- full:   a `vllm serve` started with this project's logits processor: the engine serving
          (server.serving.generate) over an upstream engine (server.upstream.engine), so the
          token-level guard runs inside the upstream and rewinds run here;
- bias:   any upstream whose tokenizer is known: the request relayed with a `logit_bias` against
          the forbidden spans' entry tokens, then the output filter (server.serving.relay);
- filter: any upstream: the request relayed, then the output filter (server.serving.relay).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from server.assembly import assemble_app, open_live_policy
from server.serving.generate.deployment import Deployment, engine_serving
from server.serving.generate.serving import ServedModel
from server.serving.relay.relay import relay_serving
from server.settings import Enforcement, ProxySettings
from server.upstream.probe import UpstreamModel, probe

log = logging.getLogger("guard.proxy")


def create_proxy_app(settings: ProxySettings, found: UpstreamModel | None = None) -> FastAPI:
    """The proxy for the upstream as `probe` finds it (probed here, outside any event loop, when not
    given). A bad policy raises ValueError, before the upstream is waited for."""
    live = open_live_policy(settings)
    found = found or asyncio.run(probe(settings))
    log.info("proxy in front of %s (%s): enforcement %s", settings.upstream, found.model, found.level)
    if found.level != Enforcement.FULL:
        return assemble_app("guard proxy", settings, live,
                            lambda decisions: relay_serving(settings, live, found, decisions))

    def deploy() -> Deployment:
        from transformers import AutoTokenizer

        from server.upstream.engine import UpstreamEngine

        engine = UpstreamEngine(settings.upstream, found.model, AutoTokenizer.from_pretrained(found.tokenizer),
                                found.max_model_len, api_key=settings.upstream_key,
                                timeout=settings.upstream_timeout)
        async def health() -> dict:
            return {"upstream": settings.upstream, "enforcement": Enforcement.FULL.value,
                    "upstreams_failing": await engine.upstream.failing()}

        return Deployment([engine], {found.model: ServedModel(engine, True)}, found.model, found.tokenizer, health)

    return assemble_app("guard proxy", settings, live, lambda decisions: engine_serving(settings, live, deploy, decisions))
