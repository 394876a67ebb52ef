"""Client and worker portal credentials: a portal session's opaque token, carried as the
`client_session` / `worker_session` cookie or as `Authorization: Bearer`, checked by IAM on every
request (issue 9, hole 8).

A magic link is no credential of its own any more: it is exchanged once, by a POST, for a session
(gateway/routes/portal.py), and the session is what IAM can end (logout, a worker's deactivation).
The check is one loopback gRPC call per portal request, with no cache, so an ended session is
refused on the very next request. The auth middleware leaves routes marked PORTAL to these
dependencies (they carry no access token). A checked session becomes a `Principal` whose context
tells booking to scope every read and write to that client's email or that worker's id, inside the
session's org: `require_client` and `require_worker` make the request's calls act as that user."""

from __future__ import annotations

import time
from typing import TypeAlias

from cws.iam.v1 import iam_pb2
from fastapi import Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from gateway.access import WRITE_METHODS
from gateway.csrf import check_same_origin
from gateway.deps import bearer_scheme
from gateway.principal import Principal, context_for
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.settings import GatewaySettings
from gateway.stubs import Iam, IamStub
from libs.common.context import AuthMethod
from libs.common.grpc_client import set_outgoing
from libs.common.roles import Role

CLIENT_PORTAL = AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")
WORKER_PORTAL = AuthMethod.Value("AUTH_METHOD_WORKER_PORTAL")
CLIENT_COOKIE = "client_session"
WORKER_COOKIE = "worker_session"
# The generated enum value type, named for annotations only (it is a plain int at run time).
PortalKind: TypeAlias = "iam_pb2.PortalKind.ValueType"
CLIENT: PortalKind = iam_pb2.PORTAL_KIND_CLIENT
WORKER: PortalKind = iam_pb2.PORTAL_KIND_WORKER
# The portals' data routes; the sign-in and logout routes live at /client/... and /worker/...
PORTAL_PREFIXES = ("/v1/client/portal/", "/v1/worker/portal/")
# Link tokens are HS256 JWTs of a few hundred bytes, session tokens under 100: far larger is not ours.
MAX_TOKEN_LENGTH = 4096


def _unauthenticated() -> ProblemError:
    return ProblemError(
        401, "unauthenticated", "a portal session is required", headers={"WWW-Authenticate": "Bearer"}
    )


def credential_of(request: Request, cookie_name: str) -> tuple[str, bool]:
    """The raw session token, or '', and whether it came from the cookie. An explicit bearer header
    wins over the cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else ""
    if token:
        return token, False
    return request.cookies.get(cookie_name, "").strip(), True


def _principal(session: iam_pb2.PortalSession) -> Principal:
    if session.kind == CLIENT:
        return Principal(
            principal_id=session.subject, org_id=session.org_id, role=Role.CLIENT, auth_method=CLIENT_PORTAL
        )
    return Principal(
        principal_id=session.subject, org_id=session.org_id, role=Role.WORKER, auth_method=WORKER_PORTAL
    )


async def check_session(iam: IamStub, kind: PortalKind, token: str) -> Principal:
    if not token:
        raise _unauthenticated()
    if len(token) > MAX_TOKEN_LENGTH:
        raise ProblemError(401, "invalid_portal_session", "the portal session is invalid or expired")
    found = await iam.CheckPortalSession(iam_pb2.CheckPortalSessionRequest(kind=kind, session_token=token))
    # Booking scopes a portal user by this subject; an empty one would scope to nothing, i.e. all.
    if not found.session.subject or not found.session.org_id:
        raise ProblemError(401, "invalid_portal_session", "the portal session is invalid or expired")
    return _principal(found.session)


async def _require(
    request: Request, iam: IamStub, settings: GatewaySettings, kind: PortalKind, cookie: str
) -> Principal:
    token, from_cookie = credential_of(request, cookie)
    if from_cookie and token and request.method in WRITE_METHODS:
        check_same_origin(request, settings)  # a cookie rides along on requests other sites start
    principal = await check_session(iam, kind, token)
    set_outgoing(context_for(request, principal))
    return principal


# OpenAPI declares the bearer form; the cookie form is named in each portal route's description
# (an apiKey-in-cookie scheme would be exact, but the spec's schemes are kept to HTTP auth).
# The principal is only known here, after the call-context middleware has run: from here on the
# request's calls act as the portal user, whom booking confines to their own bookings.
async def require_client(
    request: Request,
    iam: Iam,
    settings: Settings,
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Principal:
    return await _require(request, iam, settings, CLIENT, CLIENT_COOKIE)


async def require_worker(
    request: Request,
    iam: Iam,
    settings: Settings,
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Principal:
    return await _require(request, iam, settings, WORKER, WORKER_COOKIE)


def set_session_cookie(
    settings: GatewaySettings, response: Response, name: str, token: str, expires_at: int
) -> None:
    """HttpOnly, SameSite=Lax (no cross-site POSTs carry it), Secure outside dev/test, living exactly
    as long as the session does."""
    response.set_cookie(
        name,
        token,
        max_age=max(expires_at - int(time.time()), 0),
        path="/",
        httponly=True,
        samesite="lax",
        secure=not settings.is_dev_or_test,
    )


def clear_session_cookie(settings: GatewaySettings, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=not settings.is_dev_or_test)
