"""Prometheus metrics of one llm_agent app (its own registry, so apps never share state)."""

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
        self.upstream_duration = Histogram(
            "llm_upstream_duration_seconds", "Whole generation latency, retries included",
            ["provider", "model", "outcome"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds", "Latency until the first streamed text",
            ["provider", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "llm_tokens", "Tokens reported by the provider",
            ["provider", "model", "kind"], registry=self.registry,
        )
        self.errors = Counter(
            "llm_errors", "Errors answered, by error code", ["code"], registry=self.registry,
        )
        self.upstream_retries = Counter(
            "llm_upstream_retries", "Upstream calls retried, by the error that caused it",
            ["code"], registry=self.registry,
        )
        self.active_streams = Gauge(
            "llm_active_streams", "Streams being relayed now", registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
