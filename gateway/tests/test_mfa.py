"""Seed 002 "Admin MFA": TOTP enrolment and verification, MFA login and refresh with replay
protection (RFC 6238 §5.2), ADMIN_MFA_REQUIRED on admin routes, and OWNER-only disable.

A code is accepted once per 30 s step; a second code in the same test is the next step's
(`at(now + 30)`), which the one step of allowed drift accepts."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp

from tools.testkit import assert_clean, assert_problem, bearer, eventually


def now_code(secret: str) -> str:
    return pyotp.TOTP(secret).now()


def next_code(secret: str) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30)


def wrong_code(secret: str) -> str:
    """Six digits that are none of the codes the server could accept right now."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + offset) for offset in (-60, -30, 0, 30, 60)}
    return next(
        code
        for code in ("000000", "111111", "222222", "333333", "444444", "555555", "666666")
        if code not in valid
    )


async def login(
    http: httpx.AsyncClient, url: str, email: str, password: str, code: str | None = None
) -> httpx.Response:
    body = {"email": email, "password": password}
    if code is not None:
        body["totp_code"] = code
    response = await http.post(f"{url}/v1/auth/login", json=body)
    assert_clean(response)
    return response


async def login_ok(
    http: httpx.AsyncClient, url: str, email: str, password: str, code: str | None = None
) -> dict:
    response = await login(http, url, email, password, code)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_refused(http: httpx.AsyncClient, url: str, token: str, within: float = 2.0) -> httpx.Response:
    """Polls until the token is refused (the revocation reaches the gateway as a NATS event)."""

    async def refused() -> httpx.Response:
        response = await http.post(f"{url}/v1/auth/2fa/enroll", headers=bearer(token))
        assert_clean(response)
        assert response.status_code == 401, response.text
        return response

    return await eventually(refused, timeout=within, message="the token refused")


async def enroll(http: httpx.AsyncClient, url: str, access_token: str) -> str:
    response = await http.post(f"{url}/v1/auth/2fa/enroll", headers=bearer(access_token))
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response.json()["secret"]


async def enable_totp(http: httpx.AsyncClient, url: str, email: str, password: str) -> tuple[str, dict]:
    """Enrols and verifies with the current step's code; returns the secret and the MFA tokens."""
    tokens = await login_ok(http, url, email, password)
    secret = await enroll(http, url, tokens["access_token"])
    response = await http.post(
        f"{url}/v1/auth/2fa/verify", headers=bearer(tokens["access_token"]), json={"code": now_code(secret)}
    )
    assert_clean(response)
    assert response.status_code == 200, response.text
    return secret, response.json()


async def test_enroll_returns_base32_secret_and_otpauth_uri(gateway, http, make_org):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    response = await http.post(f"{gateway.url}/v1/auth/2fa/enroll", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    body = response.json()
    secret = body["secret"]
    assert len(secret) >= 16
    pyotp.TOTP(secret).now()  # valid base32, or this raises
    uri = urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [secret]
    assert org.owner_email.split("@")[0] in uri.path
    # Enrolment alone does not turn MFA on: logging in still needs no code.
    await login_ok(http, gateway.url, org.owner_email, org.owner_password)

    anonymous = await http.post(f"{gateway.url}/v1/auth/2fa/enroll")
    assert_problem(anonymous, 401)


async def test_verify_rejects_a_wrong_code_and_needs_enrolment(gateway, http, make_org):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    headers = bearer(tokens["access_token"])
    not_enrolled = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify", headers=headers, json={"code": "123456"}
    )
    assert_problem(not_enrolled, 409, "mfa_not_enrolled")
    secret = await enroll(http, gateway.url, tokens["access_token"])
    wrong = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify", headers=headers, json={"code": wrong_code(secret)}
    )
    assert_problem(wrong, 401, "mfa_required")
    malformed = await http.post(f"{gateway.url}/v1/auth/2fa/verify", headers=headers, json={"code": "12ab"})
    assert_problem(malformed, 422)
    # Still off: a wrong code enables nothing.
    await login_ok(http, gateway.url, org.owner_email, org.owner_password)


async def test_verify_enables_totp_and_revokes_other_sessions(gateway, http, make_org):
    org = await make_org()
    current = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    other = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    secret = await enroll(http, gateway.url, current["access_token"])

    response = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=bearer(current["access_token"]),
        json={"code": now_code(secret)},
    )
    assert_clean(response)
    assert response.status_code == 200, response.text
    verified = response.json()
    assert verified["mfa_verified"] is True
    assert verified["revoked_sessions"] >= 1
    assert verified["access_token"] and verified["refresh_token"]

    refused = await wait_refused(http, gateway.url, other["access_token"])
    assert_problem(refused, 401, "session_revoked")
    # The verifying session goes on with its fresh, MFA-verified tokens.
    users = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(verified["access_token"]))
    assert users.status_code == 200, users.text
    owner = next(u for u in users.json()["users"] if u["id"] == org.owner_id)
    assert owner["totp_enabled"] is True
    # Its pre-verification refresh token is withdrawn: merely invalid, not "reuse", so a stale tab
    # presenting it does not sign the user out of the verified session.
    stale = await http.post(
        f"{gateway.url}/v1/auth/refresh", json={"refresh_token": current["refresh_token"]}
    )
    assert_problem(stale, 401, "invalid_refresh_token")
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(verified["access_token"]))
    assert still.status_code == 200, still.text


async def test_owner_login_and_refresh_need_a_fresh_totp_code(gateway, http, make_org):
    org = await make_org()
    secret, _ = await enable_totp(http, gateway.url, org.owner_email, org.owner_password)

    missing = await login(http, gateway.url, org.owner_email, org.owner_password)
    assert_problem(missing, 401, "mfa_required")
    wrong = await login(http, gateway.url, org.owner_email, org.owner_password, wrong_code(secret))
    assert_problem(wrong, 401, "mfa_required")
    # A wrong password is still a wrong password, whatever the code.
    bad_password = await login(http, gateway.url, org.owner_email, "Wrong-password-1", next_code(secret))
    assert_problem(bad_password, 401, "invalid_credentials")

    code = next_code(secret)
    ok = await login(http, gateway.url, org.owner_email, org.owner_password, code)
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    assert tokens["mfa_verified"] is True

    replayed = await login(http, gateway.url, org.owner_email, org.owner_password, code)
    assert_problem(replayed, 401, "mfa_required")

    no_code = await http.post(
        f"{gateway.url}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(no_code, 401, "mfa_required")
    used_code = await http.post(
        f"{gateway.url}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"], "totp_code": code}
    )
    assert_problem(used_code, 401, "mfa_required")
    # A refused refresh did not use the token up: the session itself is still good.
    users = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(tokens["access_token"]))
    assert users.status_code == 200, users.text


async def test_admin_mfa_required_gates_admin_routes(gateways, http, make_org):
    gw = gateways.get(ADMIN_MFA_REQUIRED="true")
    org = await make_org()
    plain = await login_ok(http, gw.url, org.owner_email, org.owner_password)
    assert plain["mfa_verified"] is False

    refused = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(plain["access_token"]))
    assert_problem(refused, 401, "mfa_required")
    refused_admin = await http.get(f"{gw.url}/v1/admin/profile", headers=bearer(plain["access_token"]))
    assert_problem(refused_admin, 401, "mfa_required")

    # /v1/auth/* stays open, so the user can enrol and verify on this very gateway.
    secret = await enroll(http, gw.url, plain["access_token"])
    verify = await http.post(
        f"{gw.url}/v1/auth/2fa/verify", headers=bearer(plain["access_token"]), json={"code": now_code(secret)}
    )
    assert verify.status_code == 200, verify.text
    verified = verify.json()
    assert verified["mfa_verified"] is True

    users = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(verified["access_token"]))
    assert users.status_code == 200, users.text
    profile = await http.get(f"{gw.url}/v1/admin/profile", headers=bearer(verified["access_token"]))
    assert profile.status_code == 200, profile.text
    assert profile.json()["mfa_verified"] is True

    # A later login with a code gives an MFA-verified token as well.
    again = await login_ok(http, gw.url, org.owner_email, org.owner_password, next_code(secret))
    assert again["mfa_verified"] is True
    users = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(again["access_token"]))
    assert users.status_code == 200, users.text


async def test_disable_by_owner_clears_totp_and_revokes_sessions(gateway, http, make_org):
    org = await make_org()
    secret, verified = await enable_totp(http, gateway.url, org.owner_email, org.owner_password)
    second = await login_ok(http, gateway.url, org.owner_email, org.owner_password, next_code(secret))

    response = await http.post(f"{gateway.url}/v1/auth/2fa/disable", headers=bearer(verified["access_token"]))
    assert_clean(response)
    assert response.status_code == 200, response.text
    assert response.json()["revoked_sessions"] >= 2

    for token in (verified["access_token"], second["access_token"]):
        refused = await wait_refused(http, gateway.url, token)
        assert_problem(refused, 401, "session_revoked")
    # TOTP is off again: a password alone signs in.
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    assert tokens["mfa_verified"] is False


async def test_disable_by_admin_is_403(gateway, http, make_org):
    org = await make_org()
    owner = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{gateway.url}/v1/iam/users",
        headers=bearer(owner["access_token"]),
        json={"email": email, "role": "ADMIN"},
    )
    assert created.status_code == 201, created.text
    admin = await login_ok(http, gateway.url, email, created.json()["temp_password"])
    assert admin["role"] == "ADMIN"

    for body in (None, {"user_id": org.owner_id}):
        response = await http.post(
            f"{gateway.url}/v1/auth/2fa/disable", headers=bearer(admin["access_token"]), json=body
        )
        assert_problem(response, 403)
    # Nothing was revoked: the admin's own session still works.
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(admin["access_token"]))
    assert still.status_code == 200, still.text
