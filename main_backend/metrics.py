"""Prometheus metrics of one main backend app (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "http_request_duration_seconds", "HTTP request latency, by route",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "stubichat_errors", "Errors answered, by error code", ["code"],
            registry=self.registry,
        )
        self.runs = Counter(
            "stubichat_runs", "Runs ended, by outcome", ["status"], registry=self.registry,
        )
        self.active_streams = Gauge(
            "stubichat_active_streams", "SSE streams open now", registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
