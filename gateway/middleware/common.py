"""What every middleware of the edge shares: the ASGI types, the per-request state dict (request id,
client IP, the route's access, principal), and answering with a problem document before the app
runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.access import Access, Surface
from gateway.problems import ProblemError, problem_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Metrics carry their own bearer (METRICS_TOKEN), checked by the route: no rate limit, no JWT.
METRICS_PATHS = frozenset({"/metrics", "/v1/metrics"})


def state(scope: Scope) -> dict[str, Any]:
    """Starlette's `request.state`, reachable before there is a Request."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def route_access(scope: Scope) -> Access | None:
    """The access marks of the route this request reaches (RouteAccessMiddleware); None: no route."""
    return state(scope).get("access")  # type: ignore[no-any-return]


def is_admin_route(scope: Scope) -> bool:
    """Whether the admin allowlist and ADMIN_MFA_REQUIRED apply: the route is marked ADMIN."""
    access = route_access(scope)
    return access is not None and access.admin


def is_portal_route(scope: Scope) -> bool:
    """The route is marked PORTAL: it reads the portal's own credentials, not staff ones."""
    access = route_access(scope)
    return access is not None and access.surface is Surface.PORTAL


async def send_problem(scope: Scope, receive: Receive, send: Send, error: ProblemError) -> None:
    response = problem_response(
        error.status,
        error.code,
        error.detail,
        request_id=state(scope).get("request_id", ""),
        instance=scope.get("path", ""),
        errors=error.errors,
        headers=error.headers,
    )
    await response(scope, receive, send)
