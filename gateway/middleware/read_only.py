"""ADMIN_READ_ONLY: every write is refused unless it carries a break-glass token, except the short
list of routes marked OPEN_IN_READ_ONLY (gateway/access.py says which and why)."""

from __future__ import annotations

from cws.iam.v1 import iam_pb2
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from gateway.access import WRITE_METHODS
from gateway.middleware.common import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    route_access,
    send_problem,
    state,
)
from gateway.principal import Principal, context_for
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from gateway.stubs import backends_of
from libs.common.grpc_client import acting_as


class ReadOnlyMiddleware:
    """ADMIN_READ_ONLY turns writes (POST/PUT/PATCH/DELETE) into 409, whatever their path, unless
    their route is marked OPEN_IN_READ_ONLY or a valid break-glass token of the caller's own org comes
    with them (then the write is marked and audited with its reason). A request that reaches no
    route gets the router's 404 or 405."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.enabled = settings.admin_read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _marking_read_only(send)
        if scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        access = route_access(scope)
        if access is None or access.open_in_read_only:
            return await self.app(scope, receive, send)
        token = Headers(scope=scope).get("x-break-glass-token", "").strip()
        principal: Principal | None = state(scope).get("principal")
        if not token:
            error = ProblemError(
                409,
                "read_only",
                "writes are disabled in read-only mode (ADMIN_READ_ONLY); "
                "start a break-glass session and send X-Break-Glass-Token",
            )
            return await send_problem(scope, receive, send, error)
        if principal is None:
            error = ProblemError(401, "unauthenticated", "authentication required")
            return await send_problem(scope, receive, send, error)
        conn = HTTPConnection(scope)
        try:
            with acting_as(context_for(conn, principal)):
                found = await backends_of(conn).iam.stub.VerifyBreakGlass(
                    iam_pb2.VerifyBreakGlassRequest(token=token)
                )
        except ProblemError as error:
            return await send_problem(scope, receive, send, error)
        state(scope)["principal"] = principal.with_break_glass(found.session_id, found.reason)
        await self.app(scope, receive, send)


def _marking_read_only(send: Send) -> Send:
    """Every answer says `X-Read-Only: 1` while the mode is on, so a client (the web console's banner)
    knows before it tries a write."""

    async def marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"x-read-only", b"1")]
        await send(message)

    return marked
