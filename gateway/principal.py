"""Who is calling: resolved once per request by the auth middleware, turned into the signed
RequestContext for every gRPC call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from starlette.requests import HTTPConnection

from gateway.resources import settings_of
from libs.common.context import AuthMethod, RequestContext

JWT = AuthMethod.Value("AUTH_METHOD_JWT")
BASIC = AuthMethod.Value("AUTH_METHOD_BASIC")
ANONYMOUS = AuthMethod.Value("AUTH_METHOD_ANONYMOUS")


@dataclass(frozen=True)
class Principal:
    principal_id: str
    org_id: str
    role: str
    auth_method: int
    mfa_verified: bool = False
    session_id: str = ""
    username: str = ""
    break_glass_session_id: str = ""
    break_glass_reason: str = ""
    # The access token says the password is temporary (AccessClaims.password_change_required).
    password_change_required: bool = False

    def with_break_glass(self, session_id: str, reason: str) -> Principal:
        return replace(self, break_glass_session_id=session_id, break_glass_reason=reason)


def request_id_of(conn: HTTPConnection) -> str:
    return str(conn.scope.get("state", {}).get("request_id", ""))


def client_ip_of(conn: HTTPConnection) -> str:
    return str(conn.scope.get("state", {}).get("client_ip", ""))


def principal_of(conn: HTTPConnection) -> Principal | None:
    return conn.scope.get("state", {}).get("principal")  # type: ignore[no-any-return]


def public_org_of(conn: HTTPConnection) -> str:
    settings = settings_of(conn)
    test_org = conn.headers.get("x-test-org", "")
    if test_org and settings.test_org_header_allowed:
        try:
            return str(uuid.UUID(test_org))
        except ValueError:
            return ""
    return str(settings.default_org_id)


def context_for(conn: HTTPConnection, principal: Principal | None = None) -> RequestContext:
    principal = principal or principal_of(conn)
    ctx = RequestContext(request_id=request_id_of(conn), client_ip=client_ip_of(conn), auth_method=ANONYMOUS)
    if principal is None:
        # Public endpoints act for the org the caller names (X-Org-Key, resolved by the service),
        # else X-Test-Org in dev/test, else DEFAULT_ORG_ID.
        ctx.org_id = public_org_of(conn)
    else:
        ctx.org_id = principal.org_id
        ctx.principal_id = principal.principal_id
        ctx.role = principal.role
        ctx.auth_method = principal.auth_method  # type: ignore[assignment]
        ctx.mfa_verified = principal.mfa_verified
        ctx.session_id = principal.session_id
        ctx.password_change_required = principal.password_change_required
        if principal.break_glass_session_id:
            ctx.break_glass = True
            ctx.break_glass_session_id = principal.break_glass_session_id
            ctx.break_glass_reason = principal.break_glass_reason
    return ctx
