"""Prometheus metrics of one llm_agent app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from stubichat_common.metrics import LATENCY_BUCKETS, ServiceMetrics


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("llm_errors")
        self.upstream_duration = Histogram(
            "llm_upstream_duration_seconds",
            "Whole generation latency, retries included",
            ["provider", "model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Latency until the first streamed text",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llm_tokens",
            "Tokens reported by the provider",
            ["provider", "model", "kind"],
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "llm_upstream_retries",
            "Upstream calls retried, by the error that caused it",
            ["code"],
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "llm_active_streams",
            "Streams being relayed now",
            registry=self.registry,
        )
