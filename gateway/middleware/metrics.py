"""Prometheus counters and latency per route, and one access log line per request (seed 003's
fields: method, path, status_code, latency_ms, request_id, org_id, user_id, role)."""

from __future__ import annotations

import re
import time

from prometheus_client import Counter, Histogram

from gateway.middleware.common import ASGIApp, Message, Receive, Scope, Send, state
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
            # One access line per request (seed 003's fields); the request id and org come from
            # contextvars, who asked from the principal the auth middleware settled on.
            principal = state(scope).get("principal")
            log.info(
                "http_request",
                method=method,
                path=logged_path(scope, route),
                route=route,
                status_code=status,
                latency_ms=round(elapsed * 1000, 2),
                user_id=getattr(principal, "principal_id", None),
                role=getattr(principal, "role", None),
            )


_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}")
# Path parameters that are credentials (signed photo links, emailed invoice links): never logged.
SECRET_PARAMS = frozenset({"token"})


def logged_path(scope: Scope, route: str) -> str:
    """The request's path for the access log: the route's template with its parameters filled in,
    except the secret ones; never the query string (tokens travel there too). An unmatched path is
    logged as it came, cut to 200 characters."""
    if route == "unmatched":
        return str(scope.get("path", ""))[:200]
    params = scope.get("path_params") or {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return "[redacted]" if name in SECRET_PARAMS else str(params.get(name, match.group(0)))

    return _PARAM.sub(fill, route)
