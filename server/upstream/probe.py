"""What `guard proxy` learns of its upstreams at start-up: their model, context and tokenizer, and the
enforcement level they allow (server.proxy explains the levels)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from server.engine import EngineError
from server.settings import Enforcement, ProxySettings, upstream_urls
from server.upstream.client import Upstream

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
