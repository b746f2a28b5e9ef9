"""`create_app(settings)`: the FastAPI app; the engine starts in its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, FastAPI

from guard.policy import Policy, load_policy
from guard.restriction import Restrictions
from runtime.models import DEFAULT_MODEL, is_default_model, resolve_model
from runtime.restrictions import build_restrictions
from server.admin import forget
from server.ops import metrics
from server.state.audit import AuditLog
from server.state.auth import Keys, install_auth
from server.state.rate_limits import rate_limiter
from server.ops.body_limit import BodyLimit
from server.engines.embedded import EmbeddedEngine, LoraView
from server.engine import Engine
from server.protocol.errors import install_error_handlers
from server.state.live_policy import LivePolicy
from server.state.policy_store import PolicyStore
from server.protocol.responses import stream_components
from server.serving.generate.routes import HealthFields, ServedModel, ServerState, no_more_health, router
from server.settings import GuardSettings, Settings
from server.engines.variants import Variant, engine_lora_rank, load_variants, model_names

log = logging.getLogger("guard.server")


def served_name(settings: Settings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if is_default_model(settings.model):
        return DEFAULT_MODEL
    return Path(settings.model).name if Path(settings.model).exists() else settings.model


def open_live_policy(settings) -> LivePolicy:
    """The policy store in `--state-url`'s database or `--state-dir` (in memory without either), seeded
    from `--policy` when empty.
    A broken policy file or store raises ValueError here, before any engine starts."""
    if settings.state_url:
        from server.state.postgres_store import PostgresStore

        store = PostgresStore(settings.state_url)
    else:
        store = PolicyStore(settings.state_dir)
    current = store.current()
    if settings.policy:
        policy = load_policy(settings.policy)
        if store.seed(policy, str(settings.policy)) is None and current.policy != policy:
            log.warning("the policy store holds version %d (%d target(s)), which stays; --policy %s only seeds an "
                        "empty store (edits of it while serving become new versions)", current.version,
                        len(current.policy.targets), settings.policy)
    if settings.state_dir is None and settings.state_url is None:
        log.warning("no --state-dir: targets added at run time are lost at restart")
    return LivePolicy(store, settings.reload_seconds, settings.policy)


@asynccontextmanager
async def following(live: LivePolicy):
    """Keep `live` up with its store (and file) while the server runs. The store stays open: an app
    may run more than one lifespan (tests do), and SQLite needs no closing to stay consistent."""
    follower = asyncio.create_task(live.follow())
    try:
        yield
    finally:
        follower.cancel()


@dataclass
class Deployment:
    """What a guarded app serves: the engines it starts and stops, the names it answers to, and the
    tokenizer of the generating model (for semantic matching; None: no semantic matching)."""
    engines: list[Engine]
    models: dict[str, ServedModel]
    served_model: str  # the base model's name
    tokenizer_path: str | None
    health: HealthFields = no_more_health  # more for /health, asked at each call


EngineFactory = Callable[[str, dict[str, str], int | None, int], Engine]


def create_app(settings: Settings, make_engine: EngineFactory | None = None) -> FastAPI:
    """`guard serve`. Bad settings, policy or variants raise ValueError here, before any engine starts.

    `make_engine(model_path, loras, max_lora_rank, max_model_len)` builds an engine (default: an
    EmbeddedEngine from the settings; tests pass a fake). One engine serves the base model and its LoRA
    variants; each full-checkpoint variant gets its own, its context capped at the checkpoint's limit.
    """
    live = open_live_policy(settings)
    base_path = resolve_model(settings.model) if settings.variants else settings.model
    variants = load_variants(settings.variants, base_path) if settings.variants else []
    names = model_names(served_name(settings), variants)
    if make_engine is None:
        def make_engine(path, loras, rank, max_model_len):
            return EmbeddedEngine(path, max_model_len=max_model_len, kv_cache_gib=settings.kv_cache_gib,
                                  block_size=settings.block_size,
                                  enforce_eager=settings.enforce_eager, loras=loras, max_lora_rank=rank)

    def deploy() -> Deployment:
        model_path = resolve_model(settings.model)  # the bundled model is prepared here, once
        base = make_engine(model_path, {v.name: str(v.path) for v in variants if v.kind == "lora"},
                           engine_lora_rank(variants), settings.max_model_len)
        full = {v.name: make_engine(str(v.path), {}, None, min(settings.max_model_len, v.max_positions or 1 << 30))
                for v in variants if v.kind == "full"}

        def serve(variant: Variant | None) -> Engine:
            if variant is None:
                return base
            return LoraView(base, variant.name) if variant.kind == "lora" else full[variant.name]
        models = {name: ServedModel(serve(variant), guarded, str(variant.path) if variant else None)
                  for name, (variant, guarded) in names.items()}
        return Deployment([base, *full.values()], models, served_name(settings), model_path)

    return guarded_app("guard", settings, live, deploy)


def guarded_app(title: str, settings: GuardSettings, live: LivePolicy, deploy: Callable[[], Deployment]) -> FastAPI:
    """The OpenAI routes over engines (`guard serve`, and `guard proxy` at its full level): `deploy()`
    runs in the lifespan, which starts its engines beside the policy's first build."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        deployment = await asyncio.to_thread(deploy)
        engines = deployment.engines
        started = time.monotonic()

        def build(policy: Policy, version: int) -> Restrictions:
            return build_restrictions(settings, policy, deployment.tokenizer_path, version)
        try:
            await asyncio.gather(live.start(build), *(engine.start() for engine in engines))
        except BaseException:
            for engine in engines:
                await engine.shutdown()
            raise
        log.info("engine(s) ready in %.1f s; guarding %d target(s); serving %s", time.monotonic() - started,
                 len(live.restrictions.policy.targets), ", ".join(deployment.models))
        audit = AuditLog(settings.audit_log, settings.audit_text) if settings.audit_log else None
        app.state.guard = ServerState(settings, engines, deployment.models, live, deployment.served_model, audit,
                                      deployment.health)
        app.state.metrics.engines.watch(engines)
        try:
            async with following(live):
                yield
        finally:
            if audit is not None:
                audit.close()
            for engine in engines:
                await engine.shutdown()

    return assemble_app(title, lifespan, settings, router, live)


def assemble_app(title: str, lifespan, settings: GuardSettings, routes: APIRouter, live: LivePolicy) -> FastAPI:
    """What `guard serve` and `guard proxy` share around their routes: OpenAI-shaped errors, keys and
    rate limits, metrics, the live policy and its admin routes."""
    app = FastAPI(title=title, lifespan=lifespan)
    openapi = app.openapi

    def with_stream_schemas() -> dict:
        """FastAPI's document, plus the schemas of the streamed events (server.protocol.responses.STREAM)."""
        if app.openapi_schema is None:
            document = openapi()
            document.setdefault("components", {}).setdefault("schemas", {}).update(stream_components())
        return app.openapi_schema
    app.openapi = with_stream_schemas
    install_error_handlers(app)
    app.state.rate_limiter = rate_limiter(settings.rate_limit_rpm, settings.rate_limit_tpm, settings.state_url)
    install_auth(app, Keys.parse(*settings.keys), app.state.rate_limiter)
    metrics.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # the last added: the outermost
    app.state.policy = live
    app.include_router(routes)
    app.include_router(forget.router)
    return app
