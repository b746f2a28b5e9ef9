"""What `guard serve` (server.app) and `guard proxy` (server.proxy) share around their serving:
OpenAI-shaped errors, keys and rate limits, metrics, the request-size limit, the live policy and its
admin routes, the audit log, and the one router over the serving each binds at start-up."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncContextManager, Callable

from fastapi import FastAPI

from guard.policy import load_policy
from server.admin import forget
from server.ops import metrics
from server.ops.body_limit import BodyLimit
from server.protocol.errors import install_error_handlers
from server.protocol.json_bodies import JsonBodies
from server.protocol.responses import stream_components
from server.router import router
from server.serving.base import Serving
from server.serving.decisions import Decisions
from server.settings import GuardSettings
from server.state.audit import AuditLog
from server.state.auth import Keys, install_auth
from server.state.live_policy import LivePolicy
from server.state.policy_store import PolicyStore
from server.state.rate_limits import rate_limiter

log = logging.getLogger("guard.server")

# Opens the app's serving in its lifespan (its engines or its upstream, and the policy's first build),
# and closes it at the end; the decisions are the app's metrics and audit log.
ServingOpener = Callable[[Decisions], AsyncContextManager[Serving]]


def open_live_policy(settings: GuardSettings) -> LivePolicy:
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


def assemble_app(title: str, settings: GuardSettings, live: LivePolicy, open_serving: ServingOpener) -> FastAPI:
    app = FastAPI(title=title, lifespan=_lifespan(settings, live, open_serving))
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
    app.add_middleware(JsonBodies)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # the last added: the outermost
    app.state.policy = live
    app.include_router(router)
    app.include_router(forget.router)
    return app


def _lifespan(settings: GuardSettings, live: LivePolicy, open_serving: ServingOpener):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        audit = AuditLog(settings.audit_log, settings.audit_text) if settings.audit_log else None
        try:
            async with open_serving(Decisions(app.state.metrics, audit)) as serving:
                app.state.serving = serving
                async with following(live):
                    yield
        finally:
            if audit is not None:
                audit.close()
    return lifespan
