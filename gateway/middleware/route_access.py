"""Which route a request will reach, and so which edge rules apply to it (gateway/access.py): looked up
once, before the admin allowlist, authentication and read-only mode read it from the request state.

Middleware runs before routing, so this resolves the route itself with the router's matching rather
than moving the checks into route dependencies: dependencies run after the body is parsed (an invalid
body would answer 422 instead of 403 or 409) and after the call context is fixed, which break-glass
must still change."""

from __future__ import annotations

from starlette.routing import Router

from gateway.access import Access, RouteTable, api_routes
from gateway.middleware.common import ASGIApp, Receive, Scope, Send, state


class RouteAccessMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router
        self._table: RouteTable | None = None

    def lookup(self, scope: Scope) -> Access | None:
        if self._table is None:  # at the first request: every route is registered by then
            self._table = RouteTable(api_routes(self.router.routes))
        return self._table.lookup(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state(scope)["access"] = self.lookup(scope)
        await self.app(scope, receive, send)
