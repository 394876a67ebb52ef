"""/v1/auth/* through the gateway in front of the real IAM process: login, refresh rotation with
reuse detection, logout (revocation events through NATS), per-account throttling, sign-up and
password changes. Every test owns its org."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tools.processes import service_proc
from tools.testkit import assert_clean, assert_problem, bearer, eventually


async def login(http: httpx.AsyncClient, url: str, email: str, password: str, **extra: str) -> httpx.Response:
    response = await http.post(f"{url}/v1/auth/login", json={"email": email, "password": password, **extra})
    assert_clean(response)
    return response


async def login_ok(http: httpx.AsyncClient, url: str, email: str, password: str) -> dict:
    response = await login(http, url, email, password)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_refused(http: httpx.AsyncClient, url: str, token: str, within: float = 2.0) -> httpx.Response:
    """Polls an authenticated route until the token is refused; the revocation arrives as an event."""

    async def refused() -> httpx.Response:
        response = await http.get(f"{url}/v1/iam/users", headers=bearer(token))
        assert_clean(response)
        assert response.status_code == 401, response.text
        return response

    return await eventually(refused, timeout=within, message="the token refused")


async def test_login_returns_tokens(gateway, http, make_org):
    org = await make_org()
    response = await login(http, gateway.url, org.owner_email, org.owner_password)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["access_token"] and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 15 * 60
    assert body["refresh_expires_in"] > 0
    assert body["org_id"] == org.org_id
    assert body["user_id"] == org.owner_id
    assert body["role"] == "OWNER"
    assert body["mfa_verified"] is False
    assert body["must_change_password"] is False
    users = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(body["access_token"]))
    assert users.status_code == 200, users.text
    assert [u["id"] for u in users.json()["users"]] == [org.owner_id]


async def test_login_email_is_case_insensitive(gateway, http, make_org):
    org = await make_org()
    response = await login(http, gateway.url, org.owner_email.upper(), org.owner_password)
    assert response.status_code == 200, response.text


async def test_wrong_password_and_unknown_email_are_the_same_401(gateway, http, make_org):
    org = await make_org()
    wrong = await login(http, gateway.url, org.owner_email, org.owner_password + "x")
    wrong_body = assert_problem(wrong, 401, "invalid_credentials")
    assert wrong_body["instance"] == "/v1/auth/login"
    assert org.owner_password not in wrong.text

    unknown = await login(http, gateway.url, f"nobody-{uuid.uuid4().hex[:8]}@example.com", "Whatever-pass-1")
    unknown_body = assert_problem(unknown, 401, "invalid_credentials")
    # Same type, title and detail: the answer must not tell which emails have accounts.
    assert unknown_body["type"] == wrong_body["type"]
    assert unknown_body["title"] == wrong_body["title"]
    assert unknown_body["detail"] == wrong_body["detail"]


async def test_refresh_rotates_and_reuse_revokes_the_family(gateway, http, make_org):
    org = await make_org()
    first = await login_ok(http, gateway.url, org.owner_email, org.owner_password)

    rotated = await http.post(
        f"{gateway.url}/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_clean(rotated)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["user_id"] == org.owner_id
    ok = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(second["access_token"]))
    assert ok.status_code == 200, ok.text

    # The used token again: theft or replay, so the whole session ends.
    reused = await http.post(f"{gateway.url}/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reused, 401, "refresh_token_reused")

    # The token it had rotated to is refused as well ...
    after = await http.post(f"{gateway.url}/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(after, 401)
    # ... and so are the session's access tokens, once the revocation event arrives.
    refused = await wait_refused(http, gateway.url, second["access_token"])
    assert_problem(refused, 401, "session_revoked")


async def test_refresh_with_garbage_token_is_401(gateway, http, make_org):
    await make_org()
    for token in ("not-a-token", f"rt.{uuid.uuid4()}.nope", "rt.not-a-uuid.x"):
        response = await http.post(f"{gateway.url}/v1/auth/refresh", json={"refresh_token": token})
        assert_problem(response, 401, "invalid_refresh_token")


async def test_logout_revokes_access_and_refresh(gateway, http, make_org):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    other = await login_ok(http, gateway.url, org.owner_email, org.owner_password)

    out = await http.post(f"{gateway.url}/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert_clean(out)
    assert out.status_code == 204, out.text

    refused = await wait_refused(http, gateway.url, tokens["access_token"])
    assert_problem(refused, 401, "session_revoked")
    again = await http.post(f"{gateway.url}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_problem(again, 401)

    # Only that session ended: another sign-in of the same user still works.
    still = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(other["access_token"]))
    assert still.status_code == 200, still.text


async def test_logout_with_refresh_token_only(gateway, http, make_org):
    org = await make_org()
    tokens = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    out = await http.post(f"{gateway.url}/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204, out.text
    refused = await wait_refused(http, gateway.url, tokens["access_token"])
    assert_problem(refused, 401, "session_revoked")


async def test_logout_without_credentials_is_401(gateway, http, make_org):
    await make_org()
    response = await http.post(f"{gateway.url}/v1/auth/logout")
    assert_problem(response, 401)


async def test_login_throttled_per_account(gateway, http, make_org):
    org = await make_org()
    # Five failures arm the throttle (IAM's LOGIN_THROTTLE_AFTER_FAILURES).
    for _ in range(5):
        wrong = await login(http, gateway.url, org.owner_email, "Not-the-password-1")
        assert_problem(wrong, 401, "invalid_credentials")
    # While throttled even the right password is refused: the throttle is checked before the password.
    right = await login(http, gateway.url, org.owner_email, org.owner_password)
    body = assert_problem(right, 429, "login_throttled")
    assert int(right.headers["retry-after"]) >= 1
    assert "access_token" not in body
    sixth = await login(http, gateway.url, org.owner_email, "Not-the-password-1")
    assert_problem(sixth, 429, "login_throttled")
    assert int(sixth.headers["retry-after"]) >= 1

    # Another account is not affected by this one's throttle.
    other = await make_org()
    await login_ok(http, gateway.url, other.owner_email, other.owner_password)


async def test_signup_disabled_by_default(gateway, http, make_org):
    await make_org()
    response = await http.post(
        f"{gateway.url}/v1/auth/signup",
        json={
            "org_name": "Nope",
            "email": f"signup-{uuid.uuid4().hex[:8]}@example.com",
            "password": "Signup-password-1",
        },
    )
    assert_problem(response, 403, "signup_disabled")


@pytest.fixture(scope="module")
def signup_iam(stack):
    """An IAM process configured like a deployment with sign-up on: SIGNUP_ENABLED is read by the
    gateway and by IAM alike, and the session's shared IAM runs with the default (off). One for the
    module: the sign-up tests use addresses of their own, and the gateway in front of it (`gateways`
    keeps one per configuration) is then started once too."""
    proc = service_proc("iam", {**stack.env(), "SIGNUP_ENABLED": "true"}, stack.work_dir / "logs").start()
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def signup_body(email: str, password: str, org_name: str = "Fresh Org") -> dict[str, str]:
    return {"org_name": org_name, "email": email, "password": password, "full_name": "Fresh Owner"}


def token_in(message_text: str) -> str:
    found = re.search(r"\?token=([A-Za-z0-9_.-]+)", message_text)
    assert found, message_text
    return found.group(1)


async def test_signup_is_confirmed_by_email_and_then_creates_org_and_owner(
    gateways, signup_iam, notify, smtp_sink, http
):
    gw = gateways.get(SIGNUP_ENABLED="true", IAM_GRPC_TARGET=signup_iam.target)
    email = f"signup-{uuid.uuid4().hex[:8]}@example.com"
    password = "Signup-password-" + uuid.uuid4().hex[:6]
    response = await http.post(f"{gw.url}/v1/auth/signup", json=signup_body(email, password))
    assert_clean(response)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending_confirmation"
    assert "access_token" not in response.json()
    # Nothing works before the address is proved: the chosen password signs nobody in.
    assert_problem(await login(http, gw.url, email, password), 401, "invalid_credentials")

    [message] = await smtp_sink.delivered(email)
    assert "Confirm your new organisation Fresh Org" in message.subject
    token = token_in(message.text)
    confirmed = await http.post(f"{gw.url}/v1/auth/signup/confirm", json={"token": token})
    assert_clean(confirmed)
    assert confirmed.status_code == 201, confirmed.text
    body = confirmed.json()
    assert body["role"] == "OWNER" and body["must_change_password"] is False
    assert body["access_token"] and body["refresh_token"]
    uuid.UUID(body["org_id"])
    users = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(body["access_token"]))
    assert users.status_code == 200, users.text
    assert [u["email"] for u in users.json()["users"]] == [email]
    await login_ok(http, gw.url, email, password)

    # A confirmation works once, and a forged one not at all.
    again = await http.post(f"{gw.url}/v1/auth/signup/confirm", json={"token": token})
    assert_problem(again, 401, "invalid_signup_token")
    forged = await http.post(f"{gw.url}/v1/auth/signup/confirm", json={"token": token[:-4] + "AAAA"})
    assert_problem(forged, 401, "invalid_signup_token")
    weak = await http.post(
        f"{gw.url}/v1/auth/signup",
        json={"org_name": "Weak", "email": f"weak-{uuid.uuid4().hex[:8]}@example.com", "password": "short"},
    )
    weak_body = assert_problem(weak, 422)
    assert weak_body["errors"][0]["field"] == "password"


async def test_signup_with_an_email_that_has_an_account_answers_as_a_new_one(
    gateways, signup_iam, notify, smtp_sink, http, make_org
):
    """Issue 9: sign-up must not tell an outsider whether an address has an account. The existing
    account is another org's owner; the outsider's answer is the one a new address gets, the chosen
    password signs nothing in, and only the address's owner is told, by email."""
    gw = gateways.get(SIGNUP_ENABLED="true", IAM_GRPC_TARGET=signup_iam.target)
    taken = await make_org("Taken Org")
    fresh = f"signup-{uuid.uuid4().hex[:8]}@example.com"
    password = "Signup-password-" + uuid.uuid4().hex[:6]

    for_taken = await http.post(f"{gw.url}/v1/auth/signup", json=signup_body(taken.owner_email, password))
    for_fresh = await http.post(f"{gw.url}/v1/auth/signup", json=signup_body(fresh, password))
    for response in (for_taken, for_fresh):
        assert_clean(response)
    assert (for_taken.status_code, for_taken.json()) == (for_fresh.status_code, for_fresh.json())
    assert for_taken.status_code == 202

    assert_problem(await login(http, gw.url, taken.owner_email, password), 401, "invalid_credentials")
    [note] = await smtp_sink.delivered(taken.owner_email)
    assert note.subject == "You already have an account" and "token=" not in note.text
    # The owner's own account is untouched.
    await login_ok(http, gw.url, taken.owner_email, taken.owner_password)


async def test_login_answers_an_unknown_email_as_a_wrong_password(gateway, http, make_org):
    """Issue 9: the same status and the same body (the request id and nothing else differ). The
    unknown email's path verifies a password hash too (services/iam/sessions.py, `find_login` miss →
    `verify_password(None, ...)` against a dummy hash), so it also takes the time a wrong password takes;
    the test does not time it."""
    org = await make_org()
    unknown = await login(http, gateway.url, f"nobody-{uuid.uuid4().hex[:8]}@example.com", "Some-password-1")
    wrong = await login(http, gateway.url, org.owner_email, "Some-password-1")
    bodies = []
    for response in (unknown, wrong):
        body = assert_problem(response, 401, "invalid_credentials")
        bodies.append({k: v for k, v in body.items() if k != "request_id"})
    assert bodies[0] == bodies[1]
    assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")


async def test_change_password(gateway, http, make_org):
    org = await make_org()
    current = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    other = await login_ok(http, gateway.url, org.owner_email, org.owner_password)
    new_password = "New-owner-password-" + uuid.uuid4().hex[:6]
    url = f"{gateway.url}/v1/auth/change-password"
    headers = bearer(current["access_token"])

    wrong = await http.post(
        url, headers=headers, json={"current_password": "Wrong-password-1", "new_password": new_password}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    weak = await http.post(
        url, headers=headers, json={"current_password": org.owner_password, "new_password": "short"}
    )
    weak_body = assert_problem(weak, 422)
    assert weak_body["errors"][0]["field"] == "new_password"
    unauthenticated = await http.post(
        url, json={"current_password": org.owner_password, "new_password": new_password}
    )
    assert_problem(unauthenticated, 401)

    changed = await http.post(
        url, headers=headers, json={"current_password": org.owner_password, "new_password": new_password}
    )
    assert_clean(changed)
    assert changed.status_code == 204, changed.text

    old = await login(http, gateway.url, org.owner_email, org.owner_password)
    assert_problem(old, 401, "invalid_credentials")
    await login_ok(http, gateway.url, org.owner_email, new_password)
    # The other sessions end; the one that changed the password goes on.
    refused = await wait_refused(http, gateway.url, other["access_token"])
    assert_problem(refused, 401, "session_revoked")
    kept = await http.get(f"{gateway.url}/v1/iam/users", headers=headers)
    assert kept.status_code == 200, kept.text
