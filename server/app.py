"""`create_app(settings)`: the FastAPI app; the engine starts in its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from guard.models import guard_home, is_default_model, resolve_model
from guard.policy import Policy, PolicyError, load_policy
from guard.restriction import Restrictions
from server import metrics
from server.engine import EmbeddedEngine
from server.errors import install_error_handlers
from server.routes import ServerState, router
from server.settings import Settings

log = logging.getLogger("guard.server")


def served_name(settings: Settings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if is_default_model(settings.model):
        return "smollm2-135m-instruct"
    return Path(settings.model).name if Path(settings.model).exists() else settings.model


def build_restrictions(settings: Settings, policy: Policy) -> Restrictions:
    """Train (or load the cached) prompt classifier for `policy` and compile its restrictions."""
    if not settings.classifier or not policy.targets:
        return Restrictions(policy, settings.penalty)
    from classifiers.classifier import train

    classifier = train(policy, encoder_name=settings.encoder, target_fpr=settings.target_fpr,
                       cache_dir=guard_home() / "classifiers")
    from transformers import AutoTokenizer

    from guard.semantic import SemanticIndex

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.model))
    semantic = SemanticIndex(tokenizer, classifier.encoder.embed, settings.encoder, guard_home() / "semantic")
    r = classifier.report
    log.info("classifier: threshold %.3f, out-of-fold FPR %.1f%% general / %.1f%% near-domain, FNR %.1f%% "
             "(%d examples, %.1f s)", r.threshold, 100 * r.fpr_general, 100 * r.fpr_near_domain, 100 * r.fnr,
             r.examples, r.seconds)
    return Restrictions(policy, settings.penalty, classifier, semantic)


async def watch_policy(app: FastAPI) -> None:
    """Reload the policy when its file changes. The previous policy keeps serving until the new one
    is trained; requests in flight finish under the restriction they started with."""
    state = app.state.guard
    path = Path(state.settings.policy)
    seen = path.stat().st_mtime_ns if path.exists() else None
    while True:
        await asyncio.sleep(state.settings.reload_seconds)
        mtime = path.stat().st_mtime_ns if path.exists() else None
        if mtime == seen:
            continue
        seen = mtime
        try:
            policy = load_policy(path)
            state.restrictions = await asyncio.to_thread(build_restrictions, state.settings, policy)
            log.info("policy reloaded from %s: %d target(s)", path, len(policy.targets))
        except (PolicyError, ValueError) as exc:
            log.error("policy not reloaded, the previous one stays: %s", exc)


def create_app(settings: Settings, engine: EmbeddedEngine | None = None) -> FastAPI:
    """Build the app. Pass `engine` to reuse one already built (it is started in the lifespan)."""
    policy = load_policy(settings.policy) if settings.policy else Policy()  # fail fast on a bad file

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal engine
        if engine is None:
            engine = EmbeddedEngine(resolve_model(settings.model), max_model_len=settings.max_model_len,
                                    kv_cache_gib=settings.kv_cache_gib, enforce_eager=settings.enforce_eager)
        started = time.monotonic()
        restrictions, _ = await asyncio.gather(asyncio.to_thread(build_restrictions, settings, policy), engine.start())
        log.info("engine ready in %.1f s; guarding %d target(s)", time.monotonic() - started, len(policy.targets))
        app.state.guard = ServerState(settings, engine, restrictions, served_name(settings))
        watcher = asyncio.create_task(watch_policy(app)) if settings.policy and settings.reload_seconds else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            engine.shutdown()

    app = FastAPI(title="guard", lifespan=lifespan)
    app.state.metrics = metrics.create()
    install_error_handlers(app)
    app.include_router(router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        app.state.metrics.requests.labels(route=path, status=str(response.status_code)).inc()
        app.state.metrics.latency.labels(route=path).observe(time.perf_counter() - started)
        return response

    return app
