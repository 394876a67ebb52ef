"""/v1/auth/*: login, refresh, logout, sign-up, password change and TOTP (seed 002 "Admin MFA")."""

from __future__ import annotations

from typing import Any

from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Request

from gateway.deps import require_roles, require_user
from gateway.principal import Principal, principal_of
from gateway.problems import ProblemError
from gateway.routes import convert
from gateway.schemas import (
    ChangePasswordIn,
    DisableTotpIn,
    EnrollOut,
    LoginIn,
    LogoutIn,
    RefreshIn,
    RevokedOut,
    SignupIn,
    TokensOut,
    VerifyTotpIn,
    VerifyTotpOut,
)

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _iam(request: Request) -> Any:
    return request.app.state.backends.iam


@router.post(
    "/login", response_model=TokensOut, summary="Sign in with email, password and (for MFA users) a TOTP code"
)
async def login(body: LoginIn, request: Request) -> dict[str, Any]:
    response = await _iam(request).call(
        request,
        "Login",
        iam_pb2.LoginRequest(email=body.email, password=body.password, totp_code=body.totp_code or ""),
    )
    return convert.tokens(response.tokens)


@router.post(
    "/refresh", response_model=TokensOut, summary="Rotate a refresh token; reuse revokes the session"
)
async def refresh(body: RefreshIn, request: Request) -> dict[str, Any]:
    response = await _iam(request).call(
        request,
        "Refresh",
        iam_pb2.RefreshRequest(refresh_token=body.refresh_token, totp_code=body.totp_code or ""),
    )
    return convert.tokens(response.tokens)


@router.post("/logout", status_code=204, summary="End the current session (bearer token or refresh token)")
async def logout(request: Request, body: LogoutIn | None = None) -> None:
    refresh_token = body.refresh_token if body else None
    principal = principal_of(request)
    if (principal is None or not principal.session_id) and not refresh_token:
        raise ProblemError(401, "unauthenticated", "send a bearer access token or a refresh_token")
    await _iam(request).call(request, "Logout", iam_pb2.LogoutRequest(refresh_token=refresh_token or ""))


@router.post("/signup", response_model=TokensOut, status_code=201, summary="Create an org and its owner")
async def signup(body: SignupIn, request: Request) -> dict[str, Any]:
    if not request.app.state.settings.signup_enabled:
        raise ProblemError(
            403, "signup_disabled", "sign-up is disabled on this installation (SIGNUP_ENABLED)"
        )
    response = await _iam(request).call(
        request,
        "Signup",
        iam_pb2.SignupRequest(
            org_name=body.org_name,
            email=body.email,
            password=body.password,
            full_name=body.full_name,
            time_zone=body.time_zone,
        ),
    )
    return convert.tokens(response.tokens)


@router.post("/change-password", status_code=204, summary="Change your password; other sessions end")
async def change_password(
    body: ChangePasswordIn, request: Request, principal: Principal = Depends(require_user)
) -> None:
    await _iam(request).call(
        request,
        "ChangePassword",
        iam_pb2.ChangePasswordRequest(current_password=body.current_password, new_password=body.new_password),
    )


@router.post(
    "/2fa/enroll", response_model=EnrollOut, summary="Start TOTP enrolment: base32 secret + otpauth URI"
)
async def enroll(request: Request, principal: Principal = Depends(require_user)) -> dict[str, Any]:
    response = await _iam(request).call(request, "EnrollTotp", iam_pb2.EnrollTotpRequest())
    return {"secret": response.secret, "otpauth_uri": response.otpauth_uri}


@router.post(
    "/2fa/verify",
    response_model=VerifyTotpOut,
    summary="Confirm enrolment with a code: enables TOTP, revokes other sessions, returns MFA tokens",
)
async def verify(
    body: VerifyTotpIn, request: Request, principal: Principal = Depends(require_user)
) -> dict[str, Any]:
    response = await _iam(request).call(request, "VerifyTotp", iam_pb2.VerifyTotpRequest(code=body.code))
    return {**convert.tokens(response.tokens), "revoked_sessions": response.revoked_sessions}


@router.post(
    "/2fa/disable", response_model=RevokedOut, summary="Clear a user's TOTP (OWNER only); revokes sessions"
)
async def disable(
    request: Request,
    body: DisableTotpIn | None = None,
    principal: Principal = Depends(require_roles("OWNER")),
) -> dict[str, Any]:
    response = await _iam(request).call(
        request, "DisableTotp", iam_pb2.DisableTotpRequest(user_id=(body.user_id if body else None) or "")
    )
    return {"revoked_sessions": response.revoked_sessions}
