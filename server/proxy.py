"""`guard proxy`: the same HTTP API as `guard serve`, in front of an OpenAI-compatible server someone else runs.

The classifier and span extraction run here; how the restriction reaches the generation depends on
what the upstream allows, one enforcement level per upstream, chosen at start-up (`probe`) and
reported in /health:
- full:   a `vllm serve` started with this project's logits processor: the app is `guard serve`'s
          (server.app.guarded_app) over an upstream engine (server.upstream.engine), so the
          token-level guard runs inside the upstream and rewinds run here;
- bias:   any upstream whose tokenizer is known: the request relayed with a `logit_bias` against
          the forbidden spans' entry tokens, then the output filter (server.serving.relay.relay);
- filter: any upstream: the request relayed, then the output filter (server.serving.relay.relay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from server.app import Deployment, guarded_app, open_live_policy
from server.engine import EngineError
from server.serving.generate.routes import ServedModel
from server.settings import Enforcement, ProxySettings
from server.upstream.client import Upstream, upstream_urls

log = logging.getLogger("guard.proxy")
PROBE_ERROR = "guard: not valid JSON"  # what the plugin's validate_params answers to a broken spec


@dataclass(frozen=True)
class UpstreamModel:
    """What the proxy learnt of its upstream at start-up."""
    model: str  # the upstream's (first) model
    max_model_len: int
    tokenizer: str | None  # the model's tokenizer (name or folder), if known
    level: Enforcement  # never AUTO


async def wait_for_models(upstream: Upstream, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            models = await upstream.get("/models")
            if isinstance(models, dict) and models.get("data"):
                return models
            problem = "it lists no model"
        except EngineError as exc:
            problem = exc.message
        if time.monotonic() >= deadline:
            raise RuntimeError(f"--upstream {upstream.url}: not usable after {seconds:.0f} s ({problem})")
        await asyncio.sleep(1.0)


async def has_guard_plugin(upstream: Upstream, model: str) -> bool:
    """Whether the upstream runs the guard's logits processor: its parameter validation rejects a
    broken guard spec; any other server ignores `vllm_xargs` or rejects it differently."""
    probe = {"model": model, "prompt": "probe", "max_tokens": 1, "vllm_xargs": {"guard": "{"}}
    try:
        await upstream.post("/completions", probe)
    except EngineError as exc:
        return getattr(exc, "status", None) == 400 and PROBE_ERROR in exc.message
    return False


def choose_level(requested: Enforcement, plugin: bool, tokenizer: str | None) -> Enforcement:
    """The level the proxy runs at: never AUTO."""
    if requested == Enforcement.AUTO:
        return Enforcement.FULL if plugin and tokenizer else Enforcement.BIAS if tokenizer else Enforcement.FILTER
    if requested in (Enforcement.FULL, Enforcement.BIAS) and not tokenizer:
        raise RuntimeError(f"--enforcement {requested} needs the upstream model's tokenizer: pass --tokenizer")
    if requested == Enforcement.FULL and not plugin:
        raise RuntimeError("--enforcement full: the upstream does not run the guard's logits processor "
                           "(start it with `vllm serve MODEL --logits-processors "
                           "vllm_guard.processor:GuardLogitsProcessor`)")
    return requested


async def probe(settings: ProxySettings) -> UpstreamModel:
    """Wait for the upstreams, find their model, and choose the enforcement level (RuntimeError if the
    asked-for level cannot be had, or if several upstreams do not serve the same model alike)."""
    found = await asyncio.gather(*(_probe_one(settings, url) for url in upstream_urls(settings.upstream)))
    if len(set(found)) > 1:
        raise RuntimeError("--upstream: the upstreams must serve the same model alike; they serve "
                           + "; ".join(f"{url}: {f.model} at level {f.level}, context {f.max_model_len}"
                                       for url, f in zip(upstream_urls(settings.upstream), found)))
    return found[0]


async def _probe_one(settings: ProxySettings, url: str) -> UpstreamModel:
    upstream = Upstream(url, settings.upstream_key, settings.upstream_timeout)
    try:
        listed = (await wait_for_models(upstream, settings.upstream_wait))["data"][0]
        model = listed["id"]
        tokenizer = settings.tokenizer or (model if Path(model).is_dir() else None)
        level = choose_level(settings.enforcement, await has_guard_plugin(upstream, model), tokenizer)
        return UpstreamModel(model, int(listed.get("max_model_len") or 2048), tokenizer, level)
    finally:
        await upstream.aclose()


def create_proxy_app(settings: ProxySettings, found: UpstreamModel | None = None) -> FastAPI:
    """The proxy for the upstream as `probe` finds it (probed here, outside any event loop, when not
    given). A bad policy raises ValueError, before the upstream is waited for."""
    live = open_live_policy(settings)
    found = found or asyncio.run(probe(settings))
    log.info("proxy in front of %s (%s): enforcement %s", settings.upstream, found.model, found.level)
    if found.level != Enforcement.FULL:
        from server.serving.relay.relay import create_relay_app

        return create_relay_app(settings, live, found)

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

    return guarded_app("guard proxy", settings, live, deploy)
