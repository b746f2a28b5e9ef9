"""Prometheus metrics, one registry per app (no module-level mutable state on the request path)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from guard import step_timing

__all__ = ["CONTENT_TYPE", "EngineCollector", "Metrics", "create", "install", "render", "observe_restriction",
           "observe_tokens", "observe_blocks"]


class EngineCollector(Collector):
    """Figures of the engines, summed over them and read when scraped (`Engine.stats()`): the guard's
    time per engine step (the file each engine's logits processor publishes) and the scheduler's
    running and waiting requests. Reports nothing until `watch(engines)`, nor when no engine has
    figures (an upstream engine's guard runs in another process)."""

    def __init__(self) -> None:
        self.engines: tuple = ()

    def watch(self, engines) -> None:
        self.engines = tuple(engines)

    def collect(self):
        stats = [s for s in (engine.stats() for engine in self.engines) if s is not None]
        if not stats:
            return
        steps = step_timing.Snapshot.empty()
        for stat in stats:
            snapshot = step_timing.read(stat.step_stats_path) if stat.step_stats_path is not None else None
            if snapshot is not None:
                steps += snapshot
        running, waiting = sum(s.running for s in stats), sum(s.waiting for s in stats)
        yield HistogramMetricFamily("guard_step_seconds", "Guard logits processor time per engine step with "
                                    "guarded rows (published by the engine about once a second)",
                                    buckets=steps.cumulative(), sum_value=steps.sum)
        yield GaugeMetricFamily("guard_engine_requests_running", "Requests running in the engine schedulers",
                                value=running)
        yield GaugeMetricFamily("guard_engine_requests_waiting", "Requests waiting in the engine schedulers",
                                value=waiting)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    restricted: Counter
    rewinds: Counter
    filtered: Counter
    latency: Histogram
    classifier: Histogram
    tokens: Counter
    in_flight: Gauge
    engines: EngineCollector  # `metrics.engines.watch(engines)` once they run


def create() -> Metrics:
    registry = CollectorRegistry()
    engines = EngineCollector()
    registry.register(engines)
    return Metrics(
        registry=registry,
        requests=Counter("guard_http_requests", "HTTP requests by route and status", ["route", "status"],
                         registry=registry),
        restricted=Counter("guard_restricted_requests", "Requests restricted, by forget target", ["target"],
                           registry=registry),
        rewinds=Counter("guard_rewinds", "Rewinds: generations resumed from before a near-miss, by forget target",
                        ["target"], registry=registry),
        filtered=Counter("guard_content_filtered", "Answers cut short (content_filter), by forget target", ["target"],
                         registry=registry),
        latency=Histogram("guard_http_request_seconds", "Time to the response head, by route", ["route"],
                          registry=registry),
        classifier=Histogram("guard_classifier_seconds", "Prompt classification and span retrieval per request",
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=registry),
        tokens=Counter("guard_tokens", "Tokens of answered requests (embedded engine and full proxy level)",
                       ["kind"], registry=registry),
        in_flight=Gauge("guard_requests_in_flight", "HTTP requests being served (a queue depth of the engine)",
                        registry=registry),
        engines=engines,
    )


def install(app: FastAPI) -> Metrics:
    """The app's metrics, and the middleware that counts every request by route and status."""
    app.state.metrics = metrics = create()

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        finally:
            metrics.in_flight.dec()
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        metrics.requests.labels(route=path, status=str(response.status_code)).inc()
        metrics.latency.labels(route=path).observe(time.perf_counter() - started)
        return response
    return metrics


def render(metrics: Metrics) -> bytes:
    return generate_latest(metrics.registry)


def observe_restriction(metrics: Metrics, restriction) -> None:
    for target in restriction.target_ids:
        metrics.restricted.labels(target=target).inc()


def observe_tokens(metrics: Metrics, prompt_tokens: int, completion_tokens: int) -> None:
    metrics.tokens.labels(kind="prompt").inc(prompt_tokens)
    metrics.tokens.labels(kind="completion").inc(completion_tokens)


def observe_blocks(metrics: Metrics, rewound: tuple[str, ...], cut: tuple[str, ...]) -> None:
    """What the guard did to an answer: a rewind for each target in `rewound` (one per rewind), a cut
    (content_filter) for each in `cut`. Flagged or not: the safety net's blocks count too."""
    for target in rewound:
        metrics.rewinds.labels(target=target).inc()
    for target in cut:
        metrics.filtered.labels(target=target).inc()
