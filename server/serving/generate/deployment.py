"""What an engine serving serves, and its life: the engines it starts and stops, the names it answers
to, and the policy's first build beside the engines' start (`guard serve`, `guard proxy` at its full level)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from guard.policy import Policy
from guard.restriction import Restrictions
from runtime.restrictions import build_restrictions
from server.engine import Engine
from server.serving.decisions import Decisions
from server.serving.generate.serving import EngineServing, HealthFields, ServedModel, no_more_health
from server.settings import GuardSettings
from server.state.live_policy import LivePolicy

log = logging.getLogger("guard.server")


@dataclass
class Deployment:
    """The engines to start and stop, the names served, and the tokenizer of the generating model (for
    semantic matching; None: no semantic matching)."""
    engines: list[Engine]
    models: dict[str, ServedModel]
    served_model: str  # the base model's name
    tokenizer_path: str | None
    health: HealthFields = no_more_health  # more for /health, asked at each call


@asynccontextmanager
async def engine_serving(settings: GuardSettings, live: LivePolicy, deploy: Callable[[], Deployment],
                         decisions: Decisions) -> AsyncIterator[EngineServing]:
    """`deploy()` (off the event loop: it prepares models), its engines started beside the policy's first
    build; stopped at the end."""
    deployment = await asyncio.to_thread(deploy)
    engines = deployment.engines
    started = time.monotonic()

    def build(policy: Policy, version: int) -> Restrictions:
        return build_restrictions(settings, policy, deployment.tokenizer_path, version)
    try:
        await asyncio.gather(live.start(build), *(engine.start() for engine in engines))
        log.info("engine(s) ready in %.1f s; guarding %d target(s); serving %s", time.monotonic() - started,
                 len(live.restrictions.policy.targets), ", ".join(deployment.models))
        decisions.metrics.engines.watch(engines)
        yield EngineServing(settings, engines, deployment.models, live, deployment.served_model, decisions,
                            deployment.health)
    finally:
        for engine in engines:
            await engine.shutdown()
