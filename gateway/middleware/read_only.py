"""ADMIN_READ_ONLY: admin and IAM writes are refused unless they carry a break-glass token."""

from __future__ import annotations

from cws.iam.v1 import iam_pb2
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from gateway.middleware.common import ASGIApp, Receive, Scope, Send, is_admin_path, send_problem, state
from gateway.principal import Principal, context_for
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from gateway.stubs import backends_of
from libs.common.grpc_client import acting_as

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Starting break-glass is itself how writes are re-enabled during read-only mode.
READ_ONLY_EXEMPT = frozenset({"/v1/admin/break-glass/start"})


class ReadOnlyMiddleware:
    """ADMIN_READ_ONLY turns admin/IAM writes into 409, unless a valid break-glass token of the
    caller's own org comes with them (then the write is marked and audited with its reason)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.enabled = settings.admin_read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not is_admin_path(path)
            or path in READ_ONLY_EXEMPT
        ):
            return await self.app(scope, receive, send)
        token = Headers(scope=scope).get("x-break-glass-token", "").strip()
        principal: Principal | None = state(scope).get("principal")
        if not token:
            error = ProblemError(
                409,
                "read_only",
                "admin writes are disabled (ADMIN_READ_ONLY); "
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
