"""The request context: who is calling, resolved once by the gateway (or a service acting on its own).

The caller serialises a `cws.common.v1.RequestContext` and signs it, with the method and the request,
under its own key (libs/common/call_signing.py); the server interceptor verifies it and makes it
current here, so a handler reads who is calling with `current()` and authorises with `require_role`.
"""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

from cws.common.v1.context_pb2 import AuthMethod, RequestContext

from libs.common.errors import PermissionDenied, Unauthenticated

__all__ = ["AuthMethod", "RequestContext"]

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "cws_request_context", default=None
)


_call: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar(
    "cws_current_call", default=None
)


def set_call(method: str, request: Any) -> contextvars.Token[tuple[str, Any] | None]:
    """The RPC being served (full method name and request), for audit records of admin writes."""
    return _call.set((method, request))


def reset_call(token: contextvars.Token[tuple[str, Any] | None]) -> None:
    _call.reset(token)


def current_call() -> tuple[str, Any] | None:
    return _call.get()


SERVICE = AuthMethod.Value("AUTH_METHOD_SERVICE")
# The role a suite service acts with on its own; a service's call with any other is refused
# (call_signing.check_principal), so a stolen service key never claims OWNER.
SERVICE_ROLE = "ADMIN"
# Service contexts count as admin: their writes (a scheduled cleanup) are audited like an operator's.
ADMIN_METHODS = (AuthMethod.Value("AUTH_METHOD_JWT"), AuthMethod.Value("AUTH_METHOD_BASIC"), SERVICE)
STAFF_ROLES = frozenset({"OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER"})


def is_admin(ctx: RequestContext | None) -> bool:
    """A staff member signed in to the admin side, or a suite service (not a portal user, not anonymous)."""
    return ctx is not None and ctx.auth_method in ADMIN_METHODS and ctx.role in STAFF_ROLES


def service_context(service: str, org_id: str = "", request_id: str = "") -> RequestContext:
    """The context a suite service acts under on its own (the scheduler, an event consumer): the
    principal is "service:<name>" with the ADMIN role, signed with that service's own key."""
    return RequestContext(
        org_id=org_id,
        principal_id=f"service:{service}",
        role=SERVICE_ROLE,
        auth_method=SERVICE,
        request_id=request_id or f"{service}-{uuid.uuid4().hex[:16]}",
    )


def require_service() -> RequestContext:
    """Calls only another suite service may make (walking every org, for instance)."""
    ctx = current()
    if ctx.auth_method != SERVICE or not ctx.principal_id.startswith("service:"):
        raise PermissionDenied("only suite services may call this", code="service_only")
    return ctx


# Platform operators: whoever runs the installation, not any org's owner. They hold the legacy Basic
# Auth pairs, which live in the deployment's environment (seed 004's operator view is
# `curl -u "$ADMIN_BASIC_USERNAME:$ADMIN_BASIC_PASSWORD" .../v1/admin/jobs/status`); an OWNER or ADMIN
# pair is an operator. A signed-in user of any role is not: suite-wide internals (every org's job runs,
# their errors, runner hosts) are not one org's business.
PLATFORM_OPERATOR_ROLES = frozenset({"OWNER", "ADMIN"})


def is_platform_operator(auth_method: int, role: str) -> bool:
    return auth_method == AuthMethod.Value("AUTH_METHOD_BASIC") and role in PLATFORM_OPERATOR_ROLES


def require_platform_operator() -> RequestContext:
    """Suite-wide views: only an operator's Basic Auth OWNER or ADMIN pair."""
    ctx = current()
    if not ctx.principal_id:
        raise Unauthenticated("authentication required")
    if not is_platform_operator(ctx.auth_method, ctx.role):
        raise PermissionDenied(
            "suite-wide status is for platform operators (the installation's Basic Auth owner or admin)",
            code="platform_operator_required",
        )
    return ctx


# What a signed-in user whose password is temporary may still ask (issue 9): sign in and refresh
# (their own credentials), change the password, sign out, and the gateway's session check. The
# gateway refuses every other route for such a token by its route mark; each service refuses every
# other call too, so a route marked open by mistake still cannot act for that user.
OPEN_BEFORE_PASSWORD_CHANGE = frozenset(
    f"/cws.iam.v1.IamService/{name}"
    for name in ("Login", "Refresh", "ChangePassword", "Logout", "CheckSession")
)


def refuse_until_password_changed(ctx: RequestContext, method: str) -> None:
    """Called by the server interceptor for every verified call."""
    if ctx.password_change_required and method not in OPEN_BEFORE_PASSWORD_CHANGE:
        raise PermissionDenied(
            "your password is temporary: change it (POST /v1/auth/change-password) before anything else",
            code="password_change_required",
        )


def set_current(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def current() -> RequestContext:
    ctx = _current.get()
    if ctx is None:
        raise Unauthenticated("no request context", code="context_missing")
    return ctx


def current_org_id() -> uuid.UUID:
    ctx = current()
    if not ctx.org_id:
        raise PermissionDenied("this call needs an organisation", code="org_required")
    return uuid.UUID(ctx.org_id)


def require_role(*roles: str) -> RequestContext:
    """Authorisation lives with the data: services call this with the roles an action needs."""
    ctx = current()
    if not ctx.principal_id:
        raise Unauthenticated("authentication required")
    if ctx.role not in roles:
        raise PermissionDenied(f"requires one of the roles {', '.join(roles)}", code="forbidden_role")
    return ctx


def actor_label(ctx: RequestContext) -> str:
    return ctx.principal_id or "anonymous"
