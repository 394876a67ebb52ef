"""What every middleware of the edge shares: the ASGI types, the per-request state dict (request id,
client IP, principal), which paths are admin paths, and answering with a problem document before the
app runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.problems import ProblemError, problem_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_PREFIXES = ("/v1/admin/", "/v1/iam/")
# Metrics carry their own bearer (METRICS_TOKEN), checked by the route: no rate limit, no JWT.
METRICS_PATHS = frozenset({"/metrics", "/v1/metrics"})


def state(scope: Scope) -> dict[str, Any]:
    """Starlette's `request.state`, reachable before there is a Request."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def is_admin_path(path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES)


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
