"""Prometheus metrics of one main backend app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from main_backend.conversation.graph import RunEnded
from stubichat_common.metrics import LATENCY_BUCKETS, ServiceMetrics


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("stubichat_errors")
        self.runs = Counter(
            "stubichat_runs",
            "Runs ended, by outcome",
            ["status"],
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "stubichat_active_streams",
            "SSE streams open now",
            registry=self.registry,
        )
        self.llm_duration = Histogram(
            "stubichat_llm_duration_seconds",
            "LLM latency of completed runs",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "stubichat_llm_time_to_first_token_seconds",
            "First-token latency of completed runs",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "stubichat_llm_tokens",
            "Tokens of completed runs",
            ["model", "kind"],
            registry=self.registry,
        )
        self.event_appends = Counter(
            "stubichat_event_appends",
            "Events appended to thread logs",
            registry=self.registry,
        )
        self.version_conflicts = Counter(
            "stubichat_version_conflicts",
            "Appends refused for a stale expected version",
            registry=self.registry,
        )

    def run_ended(self, ended: RunEnded) -> None:
        self.runs.labels(ended.status).inc()
        if ended.latency_ms is not None:
            self.llm_duration.labels(ended.model).observe(ended.latency_ms / 1000)
        if ended.ttft_ms is not None:
            self.time_to_first_token.labels(ended.model).observe(ended.ttft_ms / 1000)
        for kind in ("prompt_tokens", "completion_tokens"):
            count = (ended.usage or {}).get(kind)
            if isinstance(count, int):
                self.tokens.labels(ended.model, kind.removesuffix("_tokens")).inc(count)
