"""Prometheus metrics, one registry per app (no module-level mutable state on the request path)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

__all__ = ["CONTENT_TYPE", "Metrics", "create", "render", "observe_restriction", "observe_finish"]


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    restricted: Counter
    rewinds: Counter
    filtered: Counter
    latency: Histogram


def create() -> Metrics:
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        requests=Counter("guard_http_requests", "HTTP requests by route and status", ["route", "status"],
                         registry=registry),
        restricted=Counter("guard_restricted_requests", "Requests restricted, by forget target", ["target"],
                           registry=registry),
        rewinds=Counter("guard_rewinds", "Rewinds: generations resumed from before a near-miss", registry=registry),
        filtered=Counter("guard_content_filtered", "Answers cut short because rewinds ran out", registry=registry),
        latency=Histogram("guard_http_request_seconds", "Time to the response head, by route", ["route"],
                          registry=registry),
    )


def render(metrics: Metrics) -> bytes:
    return generate_latest(metrics.registry)


def observe_restriction(metrics: Metrics, restriction) -> None:
    for target in restriction.target_ids:
        metrics.restricted.labels(target=target).inc()


def observe_finish(metrics: Metrics, last_chunk) -> None:
    metrics.rewinds.inc(last_chunk.rewinds)
    if last_chunk.finish_reason == "content_filter":
        metrics.filtered.inc()
