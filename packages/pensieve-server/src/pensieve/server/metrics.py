"""Prometheus metrics of one app, in a registry of its own (two apps in a process never collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Request counts, token counts, time to first token, latency and the engine's queue depth."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "pensieve_requests",
            "HTTP requests answered, by route and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "pensieve_request_duration_seconds",
            "Time from request to the end of its response (whole stream included).",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ttft = Histogram(
            "pensieve_time_to_first_token_seconds",
            "Time from request to the first text of a streamed answer.",
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self._input_tokens = Counter(
            "pensieve_input_tokens", "Prompt tokens of answered messages.", registry=self.registry
        )
        self._output_tokens = Counter(
            "pensieve_output_tokens", "Tokens generated for answered messages.", registry=self.registry
        )
        depth = Gauge(
            "pensieve_queue_depth", "Generation requests waiting for the engine.", registry=self.registry
        )
        if queue_depth is not None:
            depth.set_function(queue_depth)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def observe_tokens(self, input_tokens: int, output_tokens: int) -> None:
        self._input_tokens.inc(input_tokens)
        self._output_tokens.inc(output_tokens)

    def observe_first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
