"""Prometheus metrics of one main backend app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from stubichat_common.metrics import ServiceMetrics


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("stubichat_errors")
        self.runs = Counter(
            "stubichat_runs", "Runs ended, by outcome", ["status"], registry=self.registry,
        )
        self.active_streams = Gauge(
            "stubichat_active_streams", "SSE streams open now", registry=self.registry,
        )
