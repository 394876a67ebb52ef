"""Who the request's gRPC calls act as: the innermost middleware, so the principal is final (after
authentication and break-glass). The signing interceptor of libs/common/grpc_client.py signs it on
every call a route makes; a portal route's principal dependency narrows it to the portal user, and a
route acting for someone else says so with `acting_as` (gateway/stubs.py)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gateway.middleware.common import ASGIApp, Receive, Scope, Send
from gateway.principal import context_for
from libs.common.grpc_client import acting_as


class CallContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Scoped, so nothing of one request's identity outlives it in this task.
        with acting_as(context_for(HTTPConnection(scope))):
            await self.app(scope, receive, send)
