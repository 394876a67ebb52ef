"""Per-IP rate limits, shared by every gateway through Redis when REDIS_URL is set."""

from __future__ import annotations

import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from starlette.datastructures import MutableHeaders

from gateway.middleware.common import (
    METRICS_PATHS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    send_problem,
    state,
)
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from libs.common.logs import get_logger

log = get_logger(__name__)

RATE_LIMITED = Counter("rate_limit_rejections_total", "Requests refused by the rate limiter", ["limit"])
RATE_LIMIT_ERRORS = Counter("rate_limit_backend_errors_total", "Rate limiter storage failures (failed open)")

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", *METRICS_PATHS})
# Credential endpoints get the tighter per-IP limit: guessing, and mail-bombing through magic links.
LOGIN_PATHS = frozenset(
    {"/v1/auth/login", "/v1/auth/signup", "/v1/auth/refresh", "/v1/auth/2fa/verify", "/client/login/request"}
)


def limiter_storage(redis_url: str) -> Storage:
    if redis_url:
        return RedisStorage("async+" + redis_url if not redis_url.startswith("async+") else redis_url)
    return MemoryStorage()


class RateLimitMiddleware:
    """Per client IP, RATE_LIMIT_PER_MINUTE on everything and a tighter limit on credential
    endpoints, in Redis when REDIS_URL is set (shared by every gateway) and in-process otherwise.
    If Redis fails the request goes through (logged and counted): an outage of the limiter must
    not become an outage of the product."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings, storage: Storage) -> None:
        self.app = app
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.general = RateLimitItemPerMinute(settings.rate_limit_per_minute)
        self.login = RateLimitItemPerMinute(settings.login_rate_limit_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNLIMITED_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        ip = state(scope).get("client_ip", "")
        item, name = (self.login, "login") if path in LOGIN_PATHS else (self.general, "general")
        try:
            allowed = await self.limiter.hit(item, name, ip)
            stats = await self.limiter.get_window_stats(item, name, ip)
        except Exception as exc:  # Redis down or slow: fail open, loudly
            RATE_LIMIT_ERRORS.inc()
            log.warning("rate_limiter_unavailable", error=str(exc))
            return await self.app(scope, receive, send)
        reset = max(int(stats.reset_time - time.time()), 1)
        headers = {
            "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}",
            "RateLimit": f"limit={item.amount}, remaining={stats.remaining}, reset={reset}",
        }
        if not allowed:
            RATE_LIMITED.labels(name).inc()
            error = ProblemError(
                429,
                "rate_limited",
                f"too many requests; try again in {reset} seconds",
                headers={**headers, "Retry-After": str(reset)},
            )
            return await send_problem(scope, receive, send, error)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for key, value in headers.items():
                    response_headers[key] = value
            await send(message)

        await self.app(scope, receive, with_headers)
