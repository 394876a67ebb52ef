"""Route dependencies: who may call a route. They also declare the security schemes, so OpenAPI
documents each route's authentication. Roles and their groups are libs/common/roles.py's
(`require_roles(*MANAGERS)`, `require_roles(Role.OWNER)`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from gateway.principal import Principal, principal_of
from gateway.problems import ProblemError
from gateway.resources import settings_of
from libs.common.context import is_platform_operator

bearer_scheme = HTTPBearer(auto_error=False, description="Access token from POST /v1/auth/login")
basic_scheme = HTTPBasic(auto_error=False, description="Legacy Basic Auth pairs (LEGACY_BASIC_AUTH_ENABLED)")


def _unauthenticated(request: Request) -> ProblemError:
    headers = {}
    if settings_of(request).basic_credentials:
        headers["WWW-Authenticate"] = 'Basic realm="cws-admin"'
    else:
        headers["WWW-Authenticate"] = "Bearer"
    return ProblemError(401, "unauthenticated", "authentication required", headers=headers)


def require_roles(*roles: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
        _basic: HTTPBasicCredentials | None = Security(basic_scheme),
    ) -> Principal:
        principal = principal_of(request)
        if principal is None:
            raise _unauthenticated(request)
        if principal.role not in roles:
            raise ProblemError(403, "forbidden_role", f"requires one of the roles {', '.join(roles)}")
        return principal

    return dependency


async def require_platform_operator(
    request: Request,
    _basic: HTTPBasicCredentials | None = Security(basic_scheme),
) -> Principal:
    """Whoever runs the installation (libs/common/context.is_platform_operator says who and why):
    an OWNER or ADMIN Basic Auth pair, never a signed-in user of an org, whatever their role."""
    principal = principal_of(request)
    if principal is None:
        raise _unauthenticated(request)
    if not is_platform_operator(principal.auth_method, principal.role):
        raise ProblemError(
            403,
            "platform_operator_required",
            "suite-wide status is for platform operators (the installation's Basic Auth owner or admin)",
        )
    return principal


async def require_user(
    request: Request, _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> Principal:
    """A signed-in SaaS user (bearer token), for self-service routes like 2FA enrolment."""
    principal = principal_of(request)
    if principal is None or not principal.session_id:
        raise ProblemError(
            401,
            "unauthenticated",
            "a bearer access token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal
