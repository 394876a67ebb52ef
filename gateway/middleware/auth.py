"""Who is calling: a bearer access token (verified here, revocations from events) or legacy Basic
Auth. The principal lands in the request state; routes decide whether it is enough."""

from __future__ import annotations

import base64
import binascii
import uuid

import jwt
import structlog
from cws.iam.v1 import iam_pb2
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from gateway.access import Access
from gateway.middleware.common import (
    METRICS_PATHS,
    ASGIApp,
    Receive,
    Scope,
    Send,
    is_admin_route,
    is_portal_route,
    route_access,
    send_problem,
    state,
)
from gateway.portal_auth import PORTAL_PREFIXES
from gateway.principal import BASIC, JWT, Principal, context_for
from gateway.problems import ProblemError
from gateway.revocations import RevokedSessions
from gateway.settings import GatewaySettings, constant_time_equals
from gateway.stubs import backends_of
from libs.common.grpc_client import acting_as
from libs.common.tokens import decode_access

SIGNED_OUT = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class AuthMiddleware:
    """Resolves the caller from a bearer access token (verified locally, revocations from events)
    or legacy Basic Auth. No credentials means anonymous: each route decides whether that is enough."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings, revoked: RevokedSessions) -> None:
        self.app = app
        self.settings = settings
        self.revoked = revoked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in METRICS_PATHS:
            return await self.app(scope, receive, send)
        try:
            principal = self.resolve(
                Headers(scope=scope),
                scope.get("path", ""),
                admin=is_admin_route(scope),
                portal=is_portal_route(scope),
            )
            if principal is not None and principal.session_id and not self.revoked.live:
                await self._check_with_iam(HTTPConnection(scope), principal)
            if principal is not None and principal.password_change_required:
                self._refuse_until_password_changed(route_access(scope))
        except ProblemError as error:
            return await send_problem(scope, receive, send, error)
        state(scope)["principal"] = principal
        if principal is not None:
            structlog.contextvars.bind_contextvars(org_id=principal.org_id, principal=principal.principal_id)
        await self.app(scope, receive, send)

    def resolve(
        self, headers: Headers, path: str, *, admin: bool = False, portal: bool = False
    ) -> Principal | None:
        if portal or path.startswith(PORTAL_PREFIXES):
            # Portal credentials (a portal session token as cookie or bearer) are no access tokens:
            # the routes marked PORTAL check them with IAM (gateway/portal_auth.py), the portal
            # logouts included, which live outside the portal prefixes.
            return None
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and credentials:
            principal = self._bearer(credentials.strip())
            if self.settings.admin_mfa_required and admin and not principal.mfa_verified:
                raise ProblemError(
                    401,
                    "mfa_required",
                    "admin routes need a token from a TOTP-verified login (ADMIN_MFA_REQUIRED)",
                )
            return principal
        if scheme == "basic" and credentials and self.settings.basic_credentials:
            return self._basic(credentials.strip(), headers)
        if authorization:
            raise ProblemError(
                401,
                "invalid_credentials",
                "unsupported or malformed Authorization header",
                headers=self._challenge(),
            )
        return None

    @staticmethod
    def _refuse_until_password_changed(access: Access | None) -> None:
        """A temporary password's token opens only the routes marked OPEN_BEFORE_PASSWORD_CHANGE,
        whatever their surface or path (gateway/access.py); no route (a 404 to come) is left alone."""
        if access is not None and not access.open_before_password_change:
            raise ProblemError(
                403,
                "password_change_required",
                "your password is temporary: change it with POST /v1/auth/change-password, then "
                "refresh your tokens (POST /v1/auth/refresh) or sign in again",
            )

    async def _check_with_iam(self, conn: HTTPConnection, principal: Principal) -> None:
        """Fail safe: without the revocation feed, a session is believed only if IAM says it stands."""
        with acting_as(context_for(conn, principal)):
            response = await backends_of(conn).iam.stub.CheckSession(
                iam_pb2.CheckSessionRequest(session_id=principal.session_id)
            )
        if not response.active:
            raise ProblemError(401, "session_revoked", "this session has been signed out", headers=SIGNED_OUT)

    def _challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="cws-admin"'} if self.settings.basic_credentials else {}

    def _bearer(self, token: str) -> Principal:
        try:
            claims = decode_access(token, *self.settings.auth_secret_keys)
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise ProblemError(
                401, "invalid_token", "the access token is invalid or expired", headers=SIGNED_OUT
            ) from None
        if self.revoked.is_revoked(claims.session_id):
            raise ProblemError(401, "session_revoked", "this session has been signed out", headers=SIGNED_OUT)
        return Principal(
            principal_id=claims.user_id,
            org_id=claims.org_id,
            role=claims.role,
            auth_method=JWT,
            mfa_verified=claims.mfa_verified,
            session_id=claims.session_id,
            password_change_required=claims.password_change_required,
        )

    def _basic(self, credentials: str, headers: Headers) -> Principal:
        invalid = ProblemError(
            401, "invalid_credentials", "username or password is wrong", headers=self._challenge()
        )
        try:
            username, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid from None
        matched = None
        for credential in self.settings.basic_credentials:  # no early exit: same time for every pair
            if constant_time_equals(username, credential.username) & constant_time_equals(
                password, credential.password
            ):
                matched = credential
        if matched is None:
            raise invalid
        org_id = self.settings.default_org_id
        test_org = headers.get("x-test-org", "")
        if test_org and self.settings.test_org_header_allowed:
            try:
                org_id = str(uuid.UUID(test_org))
            except ValueError:
                raise ProblemError(400, "bad_request", "X-Test-Org must be a UUID") from None
        return Principal(
            principal_id=f"basic:{matched.username}",
            org_id=org_id,
            role=matched.role,
            auth_method=BASIC,
            username=matched.username,
        )
