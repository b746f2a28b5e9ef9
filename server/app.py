"""`create_app(settings)`: the FastAPI app; the engine starts in its lifespan, nothing at import."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from guard.models import is_default_model, resolve_model
from guard.policy import Policy, load_policy
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
        await engine.start()
        log.info("engine ready in %.1f s; guarding %d target(s)", time.monotonic() - started, len(policy.targets))
        app.state.guard = ServerState(settings, engine, Restrictions(policy, settings.penalty), served_name(settings))
        try:
            yield
        finally:
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
