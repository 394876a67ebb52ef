"""/v1/auth/*: login, refresh, logout, sign-up, password change and TOTP (seed 002 "Admin MFA")."""

from __future__ import annotations

from typing import Any

from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Request

from gateway.access import ACCOUNT, ADMIN, OPEN_BEFORE_PASSWORD_CHANGE, OPEN_IN_READ_ONLY, PUBLIC
from gateway.deps import require_roles, require_user
from gateway.principal import Principal, principal_of
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.routes import convert
from gateway.schemas import (
    ChangePasswordIn,
    ConfirmSignupIn,
    DisableTotpIn,
    EnrollOut,
    EnrollTotpIn,
    LoginIn,
    LogoutIn,
    RefreshIn,
    RevokedOut,
    SignupAcceptedOut,
    SignupIn,
    TokensOut,
    VerifyTotpIn,
    VerifyTotpOut,
)
from gateway.stubs import Iam
from libs.common.roles import Role

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=TokensOut,
    summary="Sign in with email, password and (for MFA users) a TOTP code",
    dependencies=[PUBLIC, OPEN_IN_READ_ONLY, OPEN_BEFORE_PASSWORD_CHANGE],
)
async def login(body: LoginIn, iam: Iam) -> dict[str, Any]:
    response = await iam.Login(
        iam_pb2.LoginRequest(email=body.email, password=body.password, totp_code=body.totp_code or "")
    )
    return convert.tokens(response.tokens)


@router.post(
    "/refresh",
    response_model=TokensOut,
    summary="Rotate a refresh token; reuse revokes the session",
    dependencies=[PUBLIC, OPEN_IN_READ_ONLY, OPEN_BEFORE_PASSWORD_CHANGE],
)
async def refresh(body: RefreshIn, iam: Iam) -> dict[str, Any]:
    response = await iam.Refresh(
        iam_pb2.RefreshRequest(refresh_token=body.refresh_token, totp_code=body.totp_code or "")
    )
    return convert.tokens(response.tokens)


@router.post(
    "/logout",
    status_code=204,
    summary="End the current session (bearer token or refresh token)",
    dependencies=[PUBLIC, OPEN_IN_READ_ONLY, OPEN_BEFORE_PASSWORD_CHANGE],
)
async def logout(request: Request, iam: Iam, body: LogoutIn | None = None) -> None:
    refresh_token = body.refresh_token if body else None
    principal = principal_of(request)
    if (principal is None or not principal.session_id) and not refresh_token:
        raise ProblemError(401, "unauthenticated", "send a bearer access token or a refresh_token")
    await iam.Logout(iam_pb2.LogoutRequest(refresh_token=refresh_token or ""))


def _check_signup_enabled(settings: Any) -> None:
    if not settings.signup_enabled:
        raise ProblemError(
            403, "signup_disabled", "sign-up is disabled on this installation (SIGNUP_ENABLED)"
        )


# One answer for every well-formed sign-up: whether the email has an account is told only to the
# address's owner, by email (services/iam/signups.py).
SIGNUP_ACCEPTED = {
    "status": "pending_confirmation",
    "detail": "Check your email: we sent the address a message to finish creating your organisation.",
}


@router.post(
    "/signup",
    response_model=SignupAcceptedOut,
    status_code=202,
    summary="Ask to create an org and its owner; the email's owner confirms it",
    dependencies=[PUBLIC],
)
async def signup(body: SignupIn, iam: Iam, settings: Settings) -> dict[str, Any]:
    _check_signup_enabled(settings)
    await iam.Signup(
        iam_pb2.SignupRequest(
            org_name=body.org_name,
            email=body.email,
            password=body.password,
            full_name=body.full_name,
            time_zone=body.time_zone,
        )
    )
    return SIGNUP_ACCEPTED


@router.post(
    "/signup/confirm",
    response_model=TokensOut,
    status_code=201,
    summary="Confirm a sign-up with the emailed token: creates the org and its owner, signed in",
    dependencies=[PUBLIC],
)
async def confirm_signup(body: ConfirmSignupIn, iam: Iam, settings: Settings) -> dict[str, Any]:
    _check_signup_enabled(settings)
    response = await iam.ConfirmSignup(iam_pb2.ConfirmSignupRequest(token=body.token))
    return convert.tokens(response.tokens)


@router.post(
    "/change-password",
    status_code=204,
    summary="Change your password; other sessions end",
    dependencies=[ACCOUNT, OPEN_BEFORE_PASSWORD_CHANGE],
)
async def change_password(
    body: ChangePasswordIn, iam: Iam, principal: Principal = Depends(require_user)
) -> None:
    await iam.ChangePassword(
        iam_pb2.ChangePasswordRequest(current_password=body.current_password, new_password=body.new_password)
    )


@router.post(
    "/2fa/enroll",
    response_model=EnrollOut,
    summary="Start TOTP enrolment: base32 secret + otpauth URI",
    dependencies=[ACCOUNT],
)
async def enroll(
    body: EnrollTotpIn, iam: Iam, principal: Principal = Depends(require_user)
) -> dict[str, Any]:
    response = await iam.EnrollTotp(iam_pb2.EnrollTotpRequest(current_password=body.current_password))
    return {"secret": response.secret, "otpauth_uri": response.otpauth_uri}


@router.post(
    "/2fa/verify",
    response_model=VerifyTotpOut,
    summary="Confirm enrolment with a code: enables TOTP, revokes other sessions, returns MFA tokens",
    dependencies=[ACCOUNT],
)
async def verify(
    body: VerifyTotpIn, iam: Iam, principal: Principal = Depends(require_user)
) -> dict[str, Any]:
    response = await iam.VerifyTotp(
        iam_pb2.VerifyTotpRequest(code=body.code, current_password=body.current_password)
    )
    return {**convert.tokens(response.tokens), "revoked_sessions": response.revoked_sessions}


@router.post(
    "/2fa/disable",
    response_model=RevokedOut,
    summary="Clear a user's TOTP (OWNER only); revokes sessions",
    # Another user's second factor: an admin act, under the allowlist, MFA and read-only rules.
    dependencies=[ADMIN],
)
async def disable(
    iam: Iam,
    body: DisableTotpIn | None = None,
    principal: Principal = Depends(require_roles(Role.OWNER)),
) -> dict[str, Any]:
    response = await iam.DisableTotp(
        iam_pb2.DisableTotpRequest(
            user_id=(body.user_id if body else None) or "",
            current_password=(body.current_password if body else None) or "",
        )
    )
    return {"revoked_sessions": response.revoked_sessions}
