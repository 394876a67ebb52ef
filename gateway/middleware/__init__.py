"""The gateway's edge, as pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request),
one module each.

Outermost first: request id, metrics, client IP, CORS (Starlette's), rate limit, body size, route
access (which route the request reaches, and its marks: gateway/access.py), admin IP allowlist,
authentication, read-only, call context. gateway/app.py adds them in reverse."""

from gateway.middleware.admin_allowlist import AdminAllowlistMiddleware
from gateway.middleware.auth import AuthMiddleware
from gateway.middleware.body_limit import BodyLimitMiddleware
from gateway.middleware.call_context import CallContextMiddleware
from gateway.middleware.client_ip import ClientIpMiddleware
from gateway.middleware.metrics import MetricsMiddleware
from gateway.middleware.rate_limit import RateLimitMiddleware, limiter_storage
from gateway.middleware.read_only import ReadOnlyMiddleware
from gateway.middleware.request_id import RequestIdMiddleware
from gateway.middleware.route_access import RouteAccessMiddleware

__all__ = [
    "AdminAllowlistMiddleware",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "CallContextMiddleware",
    "ClientIpMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "ReadOnlyMiddleware",
    "RequestIdMiddleware",
    "RouteAccessMiddleware",
    "limiter_storage",
]
