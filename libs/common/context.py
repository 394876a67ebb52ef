"""The signed request context: who is calling, resolved once by the gateway.

The gateway serialises a `cws.common.v1.RequestContext`, signs it with INTERNAL_CONTEXT_SECRET and
sends both as gRPC metadata. A service accepts a call only with a valid, fresh signature, so a
context forged by anything that can reach a service port is refused.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from typing import Any

from cws.common.v1.context_pb2 import AuthMethod, RequestContext

from libs.common.errors import PermissionDenied, Unauthenticated

__all__ = ["AuthMethod", "RequestContext"]

CONTEXT_KEY = "cws-context-bin"
SIGNATURE_KEY = "cws-context-sig"
_SIGNATURE_VERSION = b"v1."

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "cws_request_context", default=None
)


def _sign(payload: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), _SIGNATURE_VERSION + payload, hashlib.sha256).hexdigest()


def signed_metadata(ctx: RequestContext, secret: str) -> tuple[tuple[str, Any], ...]:
    stamped = RequestContext()
    stamped.CopyFrom(ctx)
    stamped.issued_at_unix_ms = int(time.time() * 1000)
    payload = stamped.SerializeToString()
    return ((CONTEXT_KEY, payload), (SIGNATURE_KEY, _sign(payload, secret)))


def verify_metadata(
    metadata: Sequence[tuple[str, Any]] | None, secret: str, max_age_seconds: int
) -> RequestContext:
    payload: bytes | None = None
    signature: str | None = None
    for key, value in metadata or ():
        if key == CONTEXT_KEY:
            payload = value if isinstance(value, bytes) else str(value).encode()
        elif key == SIGNATURE_KEY:
            signature = value.decode() if isinstance(value, bytes) else str(value)
    if payload is None or signature is None:
        raise Unauthenticated("missing request context", code="context_missing")
    if not hmac.compare_digest(_sign(payload, secret), signature):
        raise Unauthenticated("request context signature is invalid", code="context_forged")
    ctx = RequestContext.FromString(payload)
    age_ms = time.time() * 1000 - ctx.issued_at_unix_ms
    if age_ms > max_age_seconds * 1000 or age_ms < -30_000:
        raise Unauthenticated("request context is stale", code="context_stale")
    return ctx


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
# Service contexts count as admin: their writes (a scheduled cleanup) are audited like an operator's.
ADMIN_METHODS = (AuthMethod.Value("AUTH_METHOD_JWT"), AuthMethod.Value("AUTH_METHOD_BASIC"), SERVICE)
STAFF_ROLES = frozenset({"OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER"})


def is_admin(ctx: RequestContext | None) -> bool:
    """A staff member signed in to the admin side, or a suite service (not a portal user, not anonymous)."""
    return ctx is not None and ctx.auth_method in ADMIN_METHODS and ctx.role in STAFF_ROLES


def service_context(service: str, org_id: str = "", request_id: str = "") -> RequestContext:
    """The context a suite service acts under on its own (the scheduler, an event consumer): the
    principal is "service:<name>" with the ADMIN role, signed with the same internal secret."""
    return RequestContext(
        org_id=org_id,
        principal_id=f"service:{service}",
        role="ADMIN",
        auth_method=SERVICE,
        request_id=request_id or f"{service}-{uuid.uuid4().hex[:16]}",
    )


def require_service() -> RequestContext:
    """Calls only another suite service may make (walking every org, for instance)."""
    ctx = current()
    if ctx.auth_method != SERVICE or not ctx.principal_id.startswith("service:"):
        raise PermissionDenied("only suite services may call this", code="service_only")
    return ctx


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
