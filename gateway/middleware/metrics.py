"""Prometheus counters and latency per route, and one access log line per request."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from gateway.middleware.common import ASGIApp, Message, Receive, Scope, Send
from libs.common.logs import get_logger

log = get_logger(__name__)

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_5XX = Counter("http_5xx_errors_total", "HTTP responses with a 5xx status", ["method", "route"])


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(elapsed)
            if status >= 500:
                HTTP_5XX.labels(method, route).inc()
            # One access line per request; request id, org and principal come from contextvars.
            log.info("http_request", method=method, route=route, status=status, ms=round(elapsed * 1000, 2))
