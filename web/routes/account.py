"""Staff sign-in (email, password and, where enabled, a TOTP code), sign-out, TOTP enrolment with a QR
code, and the break-glass prompt of read-only mode.

When the gateway answers `mfa_required` to email and password, the typed password is kept sealed in the
session cookie for MFA_PENDING_SECONDS so the second step asks for the code only."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import segno
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, SignInRequired, gateway_of, staff_session
from web.pages import form_error, read_form, redirect, render, session_of
from web.session import MFA_PENDING_SECONDS

log = structlog.get_logger("web.account")
router = APIRouter(prefix="/console")


# Where a sign-in may return to: the console's pages, and the integrations page the OAuth providers
# redirect to (a sign-in that expired during the provider's consent keeps the code and state).
SIGN_IN_RETURNS = ("/console", "/admin/settings/")


def _safe_next(value: Any) -> str:
    """Only a path of our own console: never another site (an open redirect)."""
    target = str(value or "")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(SIGN_IN_RETURNS) or target.startswith("//"):
        return "/console"
    return target


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, next: str = "/console") -> HTMLResponse:
    pending = session_of(request).pending_mfa()
    return render(request, "sign_in.html", next=_safe_next(next), pending=pending)


@router.post("/sign-in", response_model=None)
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    session = session_of(request)
    target = _safe_next(form.get("next"))
    pending = session.pending_mfa()
    if form.get("step") == "code" and pending:
        email, password = str(pending["email"]), str(pending["password"])
    else:
        email, password = str(form.get("email", "")).strip(), str(form.get("password", ""))
        session.drop("mfa")
        pending = None
    body = {"email": email, "password": password}
    code = str(form.get("totp_code", "")).strip()
    if code:
        body["totp_code"] = code
    gateway = gateway_of(request)
    try:
        tokens = await gateway.call(request, "POST", "/v1/auth/login", auth="none", json=body)
    except ApiError as error:
        if error.code == "mfa_required":
            session.set(
                "mfa", {"email": email, "password": password, "until": time.time() + MFA_PENDING_SECONDS}
            )
            errors = {"totp_code": error.detail} if code else {}
            return render(
                request,
                "sign_in.html",
                status=401 if code else 200,
                next=target,
                pending=session.pending_mfa(),
                errors=errors,
            )
        session.drop("mfa")
        status = error.status if 400 <= error.status < 500 else 503
        return render(
            request,
            "sign_in.html",
            status=status,
            next=target,
            pending=None,
            values={"email": email},
            **form_error(error),
        )
    session.drop("mfa", "break_glass")
    session.set("staff", staff_session(tokens, email=email))
    if tokens.get("must_change_password"):
        return redirect("/console/password")
    return redirect(target)


@router.get("/password", response_class=HTMLResponse)
async def password_page(request: Request) -> HTMLResponse:
    if session_of(request).staff is None:
        raise SignInRequired("staff")
    return render(request, "password.html")


@router.post("/password", response_model=None)
async def change_password(request: Request) -> Response:
    """A temporary password must be changed before anything else opens (the gateway refuses the rest
    with `password_change_required`); afterwards the console signs in again with the new password, so
    the session's tokens no longer carry the change-required claim."""
    form = await read_form(request)
    session = session_of(request)
    staff = session.staff
    if staff is None:
        raise SignInRequired("staff")
    new = str(form.get("new_password", ""))
    if new != str(form.get("confirm_password", "")):
        return render(
            request, "password.html", status=422, errors={"confirm_password": "the two new passwords differ"}
        )
    gateway = gateway_of(request)
    body = {"current_password": str(form.get("current_password", "")), "new_password": new}
    try:
        await gateway.call(request, "POST", "/v1/auth/change-password", json=body)
        tokens = await gateway.call(
            request, "POST", "/v1/auth/login", auth="none", json={"email": staff["email"], "password": new}
        )
    except ApiError as error:
        if error.code == "mfa_required":  # the new password is set; the code is asked at sign-in
            session.drop("staff")
            session.flash("Your password is changed; sign in with it.")
            return redirect("/console/sign-in")
        return render(
            request, "password.html", status=error.status if error.status < 500 else 503, **form_error(error)
        )
    session.set("staff", staff_session(tokens, email=str(staff["email"])))
    session.flash("Your password is changed; your other sessions have ended.")
    return redirect("/console")


@router.post("/sign-out", response_model=None)
async def sign_out(request: Request) -> Response:
    await read_form(request)
    session = session_of(request)
    staff = session.staff
    if staff:
        try:
            await gateway_of(request).call(
                request, "POST", "/v1/auth/logout", json={"refresh_token": staff.get("refresh_token")}
            )
        except (ApiError, SignInRequired) as error:
            # Signing out of the console works even when the gateway is away or the tokens are dead.
            log.info("sign_out_not_revoked", error=str(error))
    session.drop("staff", "break_glass", "mfa", "enrol", "org_tz")
    session.flash("You are signed out.")
    return redirect("/console/sign-in")


@router.get("/account", response_class=HTMLResponse)
async def account(request: Request) -> HTMLResponse:
    profile = await gateway_of(request).call(request, "GET", "/v1/admin/profile")
    enrol = session_of(request).get("enrol")
    qr = ""
    if isinstance(enrol, dict) and enrol.get("until", 0) > time.time():
        qr = segno.make(enrol["uri"], error="m").svg_data_uri(scale=5, dark="#111827")
    else:
        enrol = None
    return render(request, "account.html", profile=profile, enrol=enrol, qr=qr)


@router.post("/account/totp", response_model=None)
async def totp_start(request: Request) -> Response:
    form = await read_form(request)
    password = str(form.get("current_password", ""))
    gateway = gateway_of(request)
    try:
        started = await gateway.call(
            request, "POST", "/v1/auth/2fa/enroll", json={"current_password": password}
        )
    except ApiError as error:
        profile = await gateway.call(request, "GET", "/v1/admin/profile")
        return render(
            request,
            "account.html",
            status=error.status if error.status < 500 else 503,
            profile=profile,
            enrol=None,
            qr="",
            **form_error(error),
        )
    session_of(request).set(
        "enrol",
        {
            "secret": started["secret"],
            "uri": started["otpauth_uri"],
            "password": password,
            "until": time.time() + MFA_PENDING_SECONDS,
        },
    )
    return redirect("/console/account")


@router.post("/account/totp/verify", response_model=None)
async def totp_verify(request: Request) -> Response:
    form = await read_form(request)
    session = session_of(request)
    enrol = session.get("enrol")
    if not isinstance(enrol, dict) or enrol.get("until", 0) < time.time():
        session.flash("The set-up took too long; start again.")
        return redirect("/console/account")
    gateway = gateway_of(request)
    try:
        tokens = await gateway.call(
            request,
            "POST",
            "/v1/auth/2fa/verify",
            json={
                "code": str(form.get("code", "")).strip(),
                "current_password": enrol["password"],
            },
        )
    except ApiError as error:
        profile = await gateway.call(request, "GET", "/v1/admin/profile")
        qr = segno.make(enrol["uri"], error="m").svg_data_uri(scale=5, dark="#111827")
        errors = error.field_errors or {"code": error.detail}
        return render(
            request,
            "account.html",
            status=error.status if error.status < 500 else 503,
            profile=profile,
            enrol=enrol,
            qr=qr,
            errors=errors,
            problem=None,
        )
    email = (session.staff or {}).get("email", "")
    session.set("staff", staff_session(tokens, email=email))
    session.drop("enrol")
    session.flash("Two-step sign-in is on: you will be asked for a code from your app each time.")
    return redirect("/console/account")


@router.post("/break-glass", response_model=None)
async def break_glass(request: Request) -> Response:
    form = await read_form(request)
    try:
        minutes = int(form.get("ttl_minutes") or 30)
    except ValueError:
        minutes = 0
    gateway = gateway_of(request)
    try:
        started = await gateway.call(
            request,
            "POST",
            "/v1/admin/break-glass/start",
            json={"reason": str(form.get("reason", "")).strip(), "ttl_minutes": minutes},
        )
    except ApiError as error:
        return render(
            request,
            "break_glass.html",
            status=error.status if error.status < 500 else 503,
            values=form,
            **form_error(error),
        )
    session_of(request).set(
        "break_glass",
        {
            "token": started["token"],
            "until": time.time() + minutes * 60,
            "reason": form.get("reason", ""),
        },
    )
    session_of(request).flash(
        f"Break-glass is on for {minutes} minutes; every write is audited with your reason."
    )
    return redirect(_safe_next(form.get("next")))


@router.get("/break-glass", response_class=HTMLResponse)
async def break_glass_page(request: Request, next: str = "/console") -> HTMLResponse:
    return render(request, "break_glass.html", values={"next": _safe_next(next), "ttl_minutes": 30})
