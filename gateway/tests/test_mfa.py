"""Seed 002 "Admin MFA": TOTP enrolment and verification, MFA login and refresh with replay
protection (RFC 6238 §5.2), ADMIN_MFA_REQUIRED on admin routes, and OWNER-only disable.

Enrolling, verifying and disabling need the acting user's current password (step-up), so a stolen
access token alone changes nothing; wrong passwords there, and wrong codes at refresh, count toward
the same per-account throttle as failed logins (issue 9, holes 4 and 5).

A code is accepted once per 30 s step; a second code in the same test is the next step's
(`at(now + 30)`), which the one step of allowed drift accepts."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp

from tools.testkit import assert_clean, assert_problem, bearer, eventually, first_sign_in, sql


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


async def enroll(http: httpx.AsyncClient, url: str, access_token: str, password: str) -> str:
    response = await http.post(
        f"{url}/v1/auth/2fa/enroll", headers=bearer(access_token), json={"current_password": password}
    )
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response.json()["secret"]


async def enable_totp(http: httpx.AsyncClient, url: str, email: str, password: str) -> tuple[str, dict]:
    """Enrols and verifies with the current step's code; returns the secret and the MFA tokens."""
    tokens = await login_ok(http, url, email, password)
    secret = await enroll(http, url, tokens["access_token"], password)
    response = await http.post(
        f"{url}/v1/auth/2fa/verify",
        headers=bearer(tokens["access_token"]),
        json={"code": now_code(secret), "current_password": password},
    )
    assert_clean(response)
    assert response.status_code == 200, response.text
    return secret, response.json()


async def test_enroll_returns_base32_secret_and_otpauth_uri(gateway, http, make_org):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    response = await http.post(
        f"{gateway.url}/v1/auth/2fa/enroll",
        headers=bearer(tokens["access_token"]),
        json={"current_password": org.owner_password},
    )
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
    password = org.owner_password
    not_enrolled = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=headers,
        json={"code": "123456", "current_password": password},
    )
    assert_problem(not_enrolled, 409, "mfa_not_enrolled")
    secret = await enroll(http, gateway.url, tokens["access_token"], password)
    wrong = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=headers,
        json={"code": wrong_code(secret), "current_password": password},
    )
    assert_problem(wrong, 401, "mfa_required")
    malformed = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=headers,
        json={"code": "12ab", "current_password": password},
    )
    assert_problem(malformed, 422)
    # Still off: a wrong code enables nothing.
    await login_ok(http, gateway.url, org.owner_email, org.owner_password)


async def test_verify_enables_totp_and_revokes_other_sessions(gateway, http, make_org):
    org = await make_org()
    current = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    other = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    secret = await enroll(http, gateway.url, current["access_token"], org.owner_password)

    response = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=bearer(current["access_token"]),
        json={"code": now_code(secret), "current_password": org.owner_password},
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
    secret = await enroll(http, gw.url, plain["access_token"], org.owner_password)
    verify = await http.post(
        f"{gw.url}/v1/auth/2fa/verify",
        headers=bearer(plain["access_token"]),
        json={"code": now_code(secret), "current_password": org.owner_password},
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

    response = await http.post(
        f"{gateway.url}/v1/auth/2fa/disable",
        headers=bearer(verified["access_token"]),
        json={"current_password": org.owner_password},
    )
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
    admin = await first_sign_in(http, gateway.url, email, created.json()["temp_password"])

    for body in (None, {"user_id": org.owner_id}):
        response = await http.post(f"{gateway.url}/v1/auth/2fa/disable", headers=admin, json=body)
        assert_problem(response, 403, "forbidden_role")
    # Nothing was revoked: the admin's own session still works.
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=admin)
    assert still.status_code == 200, still.text


# --- step-up: the current password, so a stolen access token is not a takeover (issue 9, hole 4) ---


async def failures(stack, user_id: str) -> tuple[int, bool]:
    """The account's failed-login count, and whether a throttle delay is set."""
    rows = await sql(
        stack.admin_url,
        "SELECT failed_login_count, locked_until IS NOT NULL FROM iam.users WHERE id = %s",
        (user_id,),
    )
    return rows[0]


async def test_a_stolen_access_token_alone_cannot_enrol(gateway, http, make_org, stack):
    org = await make_org()
    victim = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    stolen = bearer(victim["access_token"])
    url = f"{gateway.url}/v1/auth/2fa/enroll"

    for body in (None, {}, {"current_password": ""}):
        missing = await http.post(url, headers=stolen, json=body)
        assert_problem(missing, 422)
    wrong = await http.post(url, headers=stolen, json={"current_password": "Guessed-password-1"})
    body = assert_problem(wrong, 401, "invalid_credentials")
    assert "password" in body["detail"]
    assert await failures(stack, org.owner_id) == (1, False)  # a guess, counted like a failed login

    # Nothing was enrolled: verifying (even with the password) still says "enrol first".
    verify = await http.post(
        f"{gateway.url}/v1/auth/2fa/verify",
        headers=stolen,
        json={"code": "123456", "current_password": org.owner_password},
    )
    assert_problem(verify, 409, "mfa_not_enrolled")


async def test_a_stolen_access_token_alone_cannot_verify(gateway, http, make_org, stack):
    """Even one who learnt the enrolment secret (and so every code) cannot turn TOTP on, end the
    victim's other sessions and take a fresh refresh chain without the password."""
    org = await make_org()
    victim = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    other = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    secret = await enroll(http, gateway.url, victim["access_token"], org.owner_password)
    stolen = bearer(victim["access_token"])
    url = f"{gateway.url}/v1/auth/2fa/verify"

    missing = await http.post(url, headers=stolen, json={"code": now_code(secret)})
    assert_problem(missing, 422)
    wrong = await http.post(
        url, headers=stolen, json={"code": now_code(secret), "current_password": "Guessed-password-1"}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    assert await failures(stack, org.owner_id) == (1, False)

    # TOTP is still off, and the victim's other session still stands.
    await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(other["access_token"]))
    assert still.status_code == 200, still.text


async def test_a_stolen_access_token_alone_cannot_disable_totp(gateway, http, make_org, stack):
    org = await make_org()
    _, verified = await enable_totp(http, gateway.url, org.owner_email, org.owner_password)
    stolen = bearer(verified["access_token"])  # even an MFA-verified session's token
    url = f"{gateway.url}/v1/auth/2fa/disable"

    for body in (None, {}, {"user_id": org.owner_id}):
        missing = await http.post(url, headers=stolen, json=body)
        assert_problem(missing, 422)
    wrong = await http.post(url, headers=stolen, json={"current_password": "Guessed-password-1"})
    assert_problem(wrong, 401, "invalid_credentials")
    assert await failures(stack, org.owner_id) == (1, False)

    # TOTP is still on and the session was not revoked.
    no_code = await login(http, gateway.url, org.owner_email, org.owner_password)
    assert_problem(no_code, 401, "mfa_required")
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=stolen)
    assert still.status_code == 200, still.text


async def test_owner_disabling_another_users_totp_needs_the_owners_own_password(gateway, http, make_org):
    org = await make_org()
    owner_tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{gateway.url}/v1/iam/users",
        headers=bearer(owner_tokens["access_token"]),
        json={"email": email, "role": "ADMIN"},
    )
    assert created.status_code == 201, created.text
    admin_id = created.json()["user"]["id"]
    first = await login_ok(http, gateway.url, email, created.json()["temp_password"])
    admin_password = "Admin-password-" + uuid.uuid4().hex[:8]
    changed = await http.post(
        f"{gateway.url}/v1/auth/change-password",
        headers=bearer(first["access_token"]),
        json={"current_password": created.json()["temp_password"], "new_password": admin_password},
    )
    assert changed.status_code == 204, changed.text
    await enable_totp(http, gateway.url, email, admin_password)

    url = f"{gateway.url}/v1/auth/2fa/disable"
    stolen = bearer(owner_tokens["access_token"])
    for password in (None, "Guessed-password-1", admin_password):  # the target's password is not the step-up
        body = {"user_id": admin_id} | ({"current_password": password} if password else {})
        refused = await http.post(url, headers=stolen, json=body)
        assert_problem(refused, 422 if password is None else 401)
    still_on = await login(http, gateway.url, email, admin_password)
    assert_problem(still_on, 401, "mfa_required")

    done = await http.post(
        url, headers=stolen, json={"user_id": admin_id, "current_password": org.owner_password}
    )
    assert done.status_code == 200, done.text
    assert done.json()["revoked_sessions"] >= 1
    off = await login_ok(http, gateway.url, email, admin_password)
    assert off["mfa_verified"] is False


async def test_wrong_step_up_passwords_throttle_the_account_like_failed_logins(
    gateway, http, make_org, stack
):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    headers = bearer(tokens["access_token"])
    url = f"{gateway.url}/v1/auth/2fa/enroll"
    await sql(stack.admin_url, "UPDATE iam.users SET failed_login_count = 4 WHERE id = %s", (org.owner_id,))

    wrong = await http.post(url, headers=headers, json={"current_password": "Guessed-password-1"})
    assert_problem(wrong, 401, "invalid_credentials")
    assert await failures(stack, org.owner_id) == (5, True)

    # Push the delay out so the assertions do not race the clock: now even the right password waits,
    # at the step-up and at login alike.
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() + interval '30 seconds' WHERE id = %s",
        (org.owner_id,),
    )
    throttled = await http.post(url, headers=headers, json={"current_password": org.owner_password})
    assert_problem(throttled, 429, "login_throttled")
    assert 1 <= int(throttled.headers["retry-after"]) <= 31
    assert_problem(
        await login(http, gateway.url, org.owner_email, org.owner_password), 429, "login_throttled"
    )

    # Past the lockout threshold only an admin's reset helps, at the step-up as at login.
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET failed_login_count = 100, locked_until = NULL WHERE id = %s",
        (org.owner_id,),
    )
    locked = await http.post(url, headers=headers, json={"current_password": org.owner_password})
    assert_problem(locked, 429, "account_locked")


async def test_wrong_current_passwords_at_change_password_throttle_the_account(
    gateway, http, make_org, stack
):
    """change-password is the same step-up: with a stolen access token it must not be a way to guess
    the password past the login throttle (and then change it)."""
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    url = f"{gateway.url}/v1/auth/change-password"
    headers = bearer(tokens["access_token"])
    new_password = "New-owner-password-" + uuid.uuid4().hex[:6]
    await sql(stack.admin_url, "UPDATE iam.users SET failed_login_count = 4 WHERE id = %s", (org.owner_id,))

    wrong = await http.post(
        url, headers=headers, json={"current_password": "Guessed-password-1", "new_password": new_password}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    assert await failures(stack, org.owner_id) == (5, True)
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() + interval '30 seconds' WHERE id = %s",
        (org.owner_id,),
    )
    throttled = await http.post(
        url, headers=headers, json={"current_password": org.owner_password, "new_password": new_password}
    )
    assert_problem(throttled, 429, "login_throttled")
    # Unchanged: the old password is still the one (once the wait is over).
    await sql(stack.admin_url, "UPDATE iam.users SET locked_until = NULL WHERE id = %s", (org.owner_id,))
    await login_ok(http, gateway.url, org.owner_email, org.owner_password)


# --- wrong TOTP codes at refresh count like failed logins (issue 9, hole 5) ---------------------


async def refresh(http: httpx.AsyncClient, url: str, token: str, code: str | None = None) -> httpx.Response:
    body = {"refresh_token": token} | ({"totp_code": code} if code else {})
    response = await http.post(f"{url}/v1/auth/refresh", json=body)
    assert_clean(response)
    return response


async def test_wrong_totp_codes_at_refresh_throttle_the_account(gateway, http, make_org, stack):
    org = await make_org()
    secret, verified = await enable_totp(http, gateway.url, org.owner_email, org.owner_password)
    token = verified["refresh_token"]  # a stolen refresh token: the attacker guesses codes with it
    await sql(stack.admin_url, "UPDATE iam.users SET failed_login_count = 4 WHERE id = %s", (org.owner_id,))

    # A missing code is the first step of the UI, not a guess: not counted.
    assert_problem(await refresh(http, gateway.url, token), 401, "mfa_required")
    assert await failures(stack, org.owner_id) == (4, False)

    wrong = await refresh(http, gateway.url, token, wrong_code(secret))
    assert_problem(wrong, 401, "mfa_required")
    assert await failures(stack, org.owner_id) == (5, True)

    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() + interval '30 seconds' WHERE id = %s",
        (org.owner_id,),
    )
    code = next_code(secret)
    throttled = await refresh(http, gateway.url, token, code)
    assert_problem(throttled, 429, "login_throttled")
    assert 1 <= int(throttled.headers["retry-after"]) <= 31
    throttled_login = await login(http, gateway.url, org.owner_email, org.owner_password, code)
    assert_problem(throttled_login, 429, "login_throttled")

    # The refused refreshes used nothing up: once the wait is over, the same token and code work.
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() - interval '1 second' WHERE id = %s",
        (org.owner_id,),
    )
    ok = await refresh(http, gateway.url, token, code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["mfa_verified"] is True


async def test_wrong_totp_codes_at_refresh_lock_the_account(gateway, http, make_org, stack):
    org = await make_org()
    secret, verified = await enable_totp(http, gateway.url, org.owner_email, org.owner_password)
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET failed_login_count = 99, locked_until = NULL WHERE id = %s",
        (org.owner_id,),
    )
    wrong = await refresh(http, gateway.url, verified["refresh_token"], wrong_code(secret))
    assert_problem(wrong, 401, "mfa_required")
    assert (await failures(stack, org.owner_id))[0] == 100

    await sql(stack.admin_url, "UPDATE iam.users SET locked_until = NULL WHERE id = %s", (org.owner_id,))
    code = next_code(secret)
    locked = await refresh(http, gateway.url, verified["refresh_token"], code)
    assert_problem(locked, 429, "account_locked")
    locked_login = await login(http, gateway.url, org.owner_email, org.owner_password, code)
    assert_problem(locked_login, 429, "account_locked")
