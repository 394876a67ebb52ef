"""Client and worker portal credentials: a magic-link token, carried as the `client_session` /
`worker_session` cookie or as `Authorization: Bearer`, verified by IAM on every request.

IAM owns these tokens (format, key, TTL), so the gateway asks it rather than keeping a second copy
of the claim rules; the cost is one loopback gRPC call per portal request, which portal traffic
affords. The auth middleware leaves portal paths to these dependencies (they carry no access token).
A verified token becomes a `Principal` whose context tells booking to scope every read and write to
that client's email or that worker's id, inside the token's org: `require_client` and
`require_worker` make the request's calls act as that user from there on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cws.iam.v1 import iam_pb2
from fastapi import Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from gateway.deps import bearer_scheme
from gateway.principal import Principal, context_for
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from gateway.stubs import Iam, IamStub
from libs.common.context import AuthMethod
from libs.common.grpc_client import set_outgoing
from libs.common.roles import Role

CLIENT_PORTAL = AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")
WORKER_PORTAL = AuthMethod.Value("AUTH_METHOD_WORKER_PORTAL")
CLIENT_COOKIE = "client_session"
WORKER_COOKIE = "worker_session"
# The auth middleware does not resolve credentials under these prefixes; the routes do, here.
PORTAL_PREFIXES = ("/v1/client/portal/", "/v1/worker/portal/")
# Tokens are HS256 JWTs of a few hundred bytes; anything far larger is not one of ours.
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class VerifiedPortalToken:
    principal: Principal
    expires_at: int  # unix seconds


def _refused(detail: str) -> ProblemError:
    return ProblemError(401, "invalid_portal_token", detail, headers={"WWW-Authenticate": "Bearer"})


def credential_of(request: Request, cookie_name: str) -> str:
    """An explicit bearer header wins over the cookie; either way the raw token, or ''."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else ""
    return token or request.cookies.get(cookie_name, "").strip()


def _check_shape(token: str) -> None:
    if not token:
        raise ProblemError(
            401, "unauthenticated", "a portal session is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refused("the portal token is invalid or expired")


async def verify_client_token(iam: IamStub, token: str) -> VerifiedPortalToken:
    _check_shape(token)
    found = await iam.VerifyClientPortalToken(iam_pb2.VerifyClientPortalTokenRequest(token=token))
    # Booking scopes a client to the email in the token; a token without one (issued for a bare
    # client id) must not reach it, or the scope would be empty, which means "everything".
    if not found.email:
        raise _refused("this portal token does not name a client email")
    principal = Principal(
        principal_id=found.email, org_id=found.org_id, role=Role.CLIENT, auth_method=CLIENT_PORTAL
    )
    return VerifiedPortalToken(principal, found.expires_at.seconds)


async def verify_worker_token(iam: IamStub, token: str) -> VerifiedPortalToken:
    _check_shape(token)
    found = await iam.VerifyWorkerPortalToken(iam_pb2.VerifyWorkerPortalTokenRequest(token=token))
    if not found.worker_id:
        raise _refused("this portal token does not name a worker")
    principal = Principal(
        principal_id=found.worker_id, org_id=found.org_id, role=Role.WORKER, auth_method=WORKER_PORTAL
    )
    return VerifiedPortalToken(principal, found.expires_at.seconds)


# OpenAPI declares the bearer form; the cookie form is named in each portal route's description
# (an apiKey-in-cookie scheme would be exact, but the spec's schemes are kept to HTTP auth).
# The principal is only known here, after the call-context middleware has run: from here on the
# request's calls act as the portal user, whom booking confines to their own bookings.
async def require_client(
    request: Request, iam: Iam, _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> Principal:
    principal = (await verify_client_token(iam, credential_of(request, CLIENT_COOKIE))).principal
    set_outgoing(context_for(request, principal))
    return principal


async def require_worker(
    request: Request, iam: Iam, _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> Principal:
    principal = (await verify_worker_token(iam, credential_of(request, WORKER_COOKIE))).principal
    set_outgoing(context_for(request, principal))
    return principal


def set_session_cookie(
    settings: GatewaySettings, response: Response, name: str, token: str, expires_at: int
) -> None:
    """HttpOnly, SameSite=Lax (no cross-site POSTs carry it), Secure outside dev/test, living exactly
    as long as the token does."""
    response.set_cookie(
        name,
        token,
        max_age=max(expires_at - int(time.time()), 0),
        path="/",
        httponly=True,
        samesite="lax",
        secure=not settings.is_dev_or_test,
    )
