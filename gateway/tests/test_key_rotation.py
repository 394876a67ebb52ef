"""Rotating AUTH_SECRET_KEY without signing anyone out or locking MFA users out, with real processes.

Key A is the session's (DEV_SECRETS: the shared iam and gateways run with it). Mid-rotation, iam and
a gateway run with AUTH_SECRET_KEY=B and AUTH_SECRET_KEY_PREVIOUS=A: tokens signed under A still
verify, TOTP secrets encrypted under A still open (and are stored again under B at the next
sign-in), and `python -m services.iam.manage reencrypt-secrets` re-encrypts the rest. Then iam and
a gateway with B alone: everyone still signs in, and a secret no configured key opens is a clear
refusal an owner can clear, never an internal error."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
from cryptography.fernet import Fernet
from cws.iam.v1 import iam_pb2, iam_pb2_grpc

from gateway.tests.test_mfa import enable_totp, login, login_ok, now_code
from libs.common.tokens import AccessClaims, encode_access
from tools.iam_seed import hold_temp_password, iam_database, manage
from tools.processes import DEV_SECRETS, GatewayProc, ServiceProc, service_proc
from tools.testkit import as_service, assert_problem, bearer, eventually, sign_in, signing_channel, sql

KEY_A = DEV_SECRETS["AUTH_SECRET_KEY"]
KEY_B = "rotated-auth-secret-" + secrets.token_hex(16)
LOST_KEY = "lost-auth-secret-" + secrets.token_hex(16)


@dataclass
class Deployment:
    iam: ServiceProc
    gateway: GatewayProc


def deploy(stack, gateways, label: str, **keys: str) -> Iterator[Deployment]:
    """An iam and a gateway in front of it, both with `keys` (the rest as the session runs them)."""
    iam = service_proc("iam", {**stack.env(), **keys}, stack.work_dir / "logs", label=label).start()
    try:
        iam.wait_ready()
        yield Deployment(iam, gateways.get(IAM_GRPC_TARGET=iam.target, **keys))
    finally:
        iam.stop()


@pytest.fixture(scope="module")
def rotating(stack, gateways) -> Iterator[Deployment]:
    """Mid-rotation: B signs and encrypts, A still verifies and decrypts."""
    yield from deploy(stack, gateways, "iam-rotating", AUTH_SECRET_KEY=KEY_B, AUTH_SECRET_KEY_PREVIOUS=KEY_A)


@pytest.fixture(scope="module")
def rotated(stack, gateways) -> Iterator[Deployment]:
    """After the rotation: A dropped, B alone."""
    yield from deploy(stack, gateways, "iam-rotated", AUTH_SECRET_KEY=KEY_B)


async def totp_column(stack, user_id: str) -> str:
    [(sealed,)] = await sql(
        stack.admin_url, "SELECT totp_secret_enc FROM iam.users WHERE id = %s", (user_id,)
    )
    return sealed


async def fresh_code(stack, user_id: str, secret: str) -> str:
    """The current code, made usable again: a code is good once per 30 s step (RFC 6238 §5.2), and
    this test signs the same users in more often than that."""
    await sql(stack.admin_url, "UPDATE iam.users SET totp_last_step = 0 WHERE id = %s", (user_id,))
    return now_code(secret)


async def test_rotating_the_key_signs_nobody_out_and_locks_no_mfa_user_out(
    gateway, rotating, rotated, http, make_org, stack
):
    first, second = await make_org(), await make_org()
    first_secret, before = await enable_totp(http, gateway.url, first.owner_email, first.owner_password)
    second_secret, _ = await enable_totp(http, gateway.url, second.owner_email, second.owner_password)
    first_sealed, second_sealed = (
        await totp_column(stack, first.owner_id),
        await totp_column(stack, second.owner_id),
    )
    db = iam_database(stack.app_url)
    try:  # a temporary password waiting for notify, sealed under A too
        await hold_temp_password(
            db,
            org_id=second.org_id,
            user_id=second.owner_id,
            password="Waiting-temp-password-1",
            auth_secret=KEY_A,
        )
    finally:
        await db.dispose()

    # Mid-rotation. The access token issued under A is still accepted.
    url = rotating.gateway.url
    users = await http.get(f"{url}/v1/iam/users", headers=bearer(before["access_token"]))
    assert users.status_code == 200, users.text
    # Signing in with TOTP works, and stores the secret again, under B.
    code = await fresh_code(stack, first.owner_id, first_secret)
    signed_in = await login_ok(http, url, first.owner_email, first.owner_password, code)
    assert signed_in["mfa_verified"] is True
    assert await totp_column(stack, first.owner_id) != first_sealed
    # New tokens are signed under B alone: a gateway that knows only A refuses them.
    assert_problem(
        await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(signed_in["access_token"])),
        401,
        "invalid_token",
    )
    # The refresh token issued under A refreshes: refresh tokens do not depend on the key.
    refreshed = await http.post(
        f"{url}/v1/auth/refresh",
        json={
            "refresh_token": before["refresh_token"],
            "totp_code": await fresh_code(stack, first.owner_id, first_secret),
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    # A token signed under neither key is refused.
    forged = encode_access(
        AccessClaims(
            user_id=first.owner_id,
            org_id=first.org_id,
            role="OWNER",
            session_id=str(uuid.uuid4()),
            mfa_verified=True,
            expires_at=int(time.time()) + 300,
        ),
        LOST_KEY,
    )
    assert_problem(await http.get(f"{url}/v1/iam/users", headers=bearer(forged)), 401, "invalid_token")

    # The operator re-encrypts what nobody used meanwhile: the second owner's secret and the waiting password.
    done = manage(
        stack,
        "reencrypt-secrets",
        *("--org", first.org_id, "--org", second.org_id),
        AUTH_SECRET_KEY=KEY_B,
        AUTH_SECRET_KEY_PREVIOUS=KEY_A,
    )
    assert done.returncode == 0, done.stderr
    assert "totp_secrets: re-encrypted=1 already_current=1 unreadable=0" in done.stdout, done.stdout
    assert "temp_passwords: re-encrypted=1 already_current=0 unreadable=0" in done.stdout, done.stdout
    assert await totp_column(stack, second.owner_id) != second_sealed

    # A dropped: both owners sign in with their codes, the waiting password is still notify's to claim,
    # and the access token issued under A has stopped working.
    url = rotated.gateway.url
    for org, secret in ((first, first_secret), (second, second_secret)):
        code = await fresh_code(stack, org.owner_id, secret)
        assert (await login_ok(http, url, org.owner_email, org.owner_password, code))["mfa_verified"] is True
    async with signing_channel(rotated.iam.target) as channel:
        claimed = await iam_pb2_grpc.IamServiceStub(channel).ClaimTemporaryPassword(
            iam_pb2.ClaimTemporaryPasswordRequest(user_id=second.owner_id),
            metadata=as_service(second.org_id, "notify"),
        )
    assert claimed.found and claimed.temp_password == "Waiting-temp-password-1"
    assert_problem(
        await http.get(f"{url}/v1/iam/users", headers=bearer(before["access_token"])), 401, "invalid_token"
    )


async def new_admin(http: httpx.AsyncClient, url: str, owner_headers: dict[str, str]) -> tuple[str, str, str]:
    """An ADMIN of the owner's org with a password of their own: (user id, email, password)."""
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{url}/v1/iam/users", headers=owner_headers, json={"email": email, "role": "ADMIN"}
    )
    assert created.status_code == 201, created.text
    temp, password = created.json()["temp_password"], "Admin-password-" + uuid.uuid4().hex[:10]
    changed = await http.post(
        f"{url}/v1/auth/change-password",
        headers=await sign_in(http, url, email, temp),
        json={"current_password": temp, "new_password": password},
    )
    assert changed.status_code == 204, changed.text
    return created.json()["user"]["id"], email, password


async def test_a_totp_secret_no_configured_key_opens_is_a_clear_refusal_an_owner_can_clear(
    rotated, http, make_org, stack
):
    url = rotated.gateway.url
    org = await make_org()
    owner_headers = await sign_in(http, url, org.owner_email, org.owner_password)
    admin_id, email, password = await new_admin(http, url, owner_headers)
    # The admin's TOTP secret was encrypted under a key nobody configured any more (it was lost).
    secret = pyotp.random_base32()
    lost = Fernet(Fernet.generate_key()).encrypt(secret.encode()).decode()
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET totp_enabled = true, totp_secret_enc = %s, totp_last_step = 0 WHERE id = %s",
        (lost, admin_id),
    )

    refused = assert_problem(
        await login(http, url, email, password, now_code(secret)), 409, "mfa_secret_unreadable"
    )
    assert "ask an owner" in refused["detail"]
    assert secret not in str(refused) and "AUTH_SECRET_KEY" not in str(refused)
    # The operator's log says which setting would bring the key back, and the console lists the row.
    await eventually(
        lambda: (
            "totp_secret_unreadable" in rotated.iam.tail(200)
            and "AUTH_SECRET_KEY_PREVIOUS" in rotated.iam.tail(200)
        ),
        message="the operator's log line",
    )
    check = manage(stack, "reencrypt-secrets", "--org", org.org_id, AUTH_SECRET_KEY=KEY_B)
    assert check.returncode == 1, (check.stdout, check.stderr)
    assert "totp_secrets: re-encrypted=0 already_current=0 unreadable=1" in check.stdout, check.stdout
    assert "AUTH_SECRET_KEY_PREVIOUS" in check.stderr, check.stderr
    assert f"totp secret: org {org.org_id} user {admin_id}" in check.stderr, check.stderr
    assert await totp_column(stack, admin_id) == lost, "a row nothing opens is left as it is"

    # An owner turns the admin's TOTP off; the admin signs in and may enrol again.
    disabled = await http.post(
        f"{url}/v1/auth/2fa/disable",
        headers=owner_headers,
        json={"user_id": admin_id, "current_password": org.owner_password},
    )
    assert disabled.status_code == 200, disabled.text
    assert (await login_ok(http, url, email, password))["mfa_verified"] is False
