"""The operator console (`python -m services.iam.manage`): creating an org with its owner, rescuing
an org whose only owner is locked out (of the password or of TOTP), and walking every org to
re-encrypt secrets (the command itself runs in gateway/tests/test_key_rotation.py, around a key
rotation)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import psycopg
import pyotp
from cws.iam.v1 import events_pb2, iam_pb2, iam_pb2_grpc

from libs.common import context as request_context
from libs.common.tokens import decode_access
from services.iam.reencrypt import every_org
from tools.devstack import free_port
from tools.iam_seed import iam_database, manage
from tools.processes import DEV_SECRETS
from tools.testkit import JWT, as_role, rpc_error, signed, signing_channel, sql


def test_create_org_then_rescue_a_locked_owner(stack):
    email = f"console-{uuid.uuid4().hex[:8]}@example.com"
    created = manage(
        stack,
        "create-org",
        "--name",
        "Console Co",
        "--owner-email",
        email,
        OWNER_PASSWORD="Console-owner-password-1",
    )
    assert created.returncode == 0, created.stderr
    org_id = created.stdout.split("org_id=")[1].split()[0]

    again = manage(
        stack,
        "create-org",
        "--name",
        "Twice",
        "--owner-email",
        email,
        OWNER_PASSWORD="Console-owner-password-1",
    )
    assert again.returncode == 2 and "already exists" in again.stderr

    weak = manage(
        stack, "create-org", "--name", "Weak", "--owner-email", f"w-{email}", OWNER_PASSWORD="secret"
    )
    assert weak.returncode == 2 and "at least 12" in weak.stderr

    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute("UPDATE iam.users SET failed_login_count = 100 WHERE lower(email) = %s", (email,))

    reset = manage(stack, "reset-password", "--email", email)
    assert reset.returncode == 0, reset.stderr
    assert f"org_id={org_id}" in reset.stdout and "temp_password=" in reset.stdout
    with psycopg.connect(stack.admin_url) as conn:
        count, must_change = conn.execute(
            "SELECT failed_login_count, must_change_password FROM iam.users WHERE lower(email) = %s", (email,)
        ).fetchone()
        action = conn.execute(
            "SELECT actor FROM iam.admin_audit_logs WHERE org_id = %s AND action = 'iam.user.reset_password'",
            (org_id,),
        ).fetchone()
    assert count == 0 and must_change is True
    assert action == ("operator:console",)

    missing = manage(stack, "reset-password", "--email", f"nobody-{email}")
    assert missing.returncode == 2 and "no account" in missing.stderr


def test_unknown_time_zones_are_refused(stack):
    result = manage(
        stack,
        "create-org",
        "--name",
        "Nowhere",
        "--owner-email",
        f"n-{uuid.uuid4().hex[:8]}@example.com",
        "--time-zone",
        "Mars/Olympus_Mons",
        OWNER_PASSWORD="Console-owner-password-1",
    )
    assert result.returncode == 2 and "unknown time zone" in result.stderr


async def test_reencrypt_secrets_walks_every_org_page_by_page(stack, make_org):
    """`reencrypt-secrets` without --org visits each org once, through iam.list_orgs (RLS shows the
    runtime role one org at a time, so it cannot simply select every row)."""
    mine = {(await make_org(f"Rekey {n}")).org_id for n in range(3)}
    db = iam_database(stack.app_url)
    try:
        seen = [str(org_id) async for org_id in every_org(db, page_size=2)]
    finally:
        await db.dispose()
    assert len(seen) == len(set(seen)) and mine <= set(seen)


async def test_disable_totp_rescues_a_sole_owner_locked_out_of_two_factor(stack, iam, make_org):
    """A sole OWNER with TOTP and no authenticator: nobody in the API can turn it off. The console
    does, ends the owner's sessions (the gateways hear cws.iam.session.revoked) and audits the reason;
    the owner then signs in with the password alone."""
    org = await make_org("Lost Phone Co")
    anonymous = signed(
        request_context.RequestContext(
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS"),  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
        )
    )
    password_only = iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password)
    async with signing_channel(iam.target) as channel:
        stub: Any = iam_pb2_grpc.IamServiceStub(channel)
        first = (await stub.Login(password_only, metadata=anonymous)).tokens
        as_owner = signed(
            request_context.RequestContext(
                org_id=org.org_id,
                principal_id=org.owner_id,
                role="OWNER",
                auth_method=JWT,  # type: ignore[arg-type]
                request_id=f"test-{uuid.uuid4().hex[:12]}",
                session_id=decode_access(first.access_token, DEV_SECRETS["AUTH_SECRET_KEY"]).session_id,
            )
        )
        enrolled = await stub.EnrollTotp(
            iam_pb2.EnrollTotpRequest(current_password=org.owner_password), metadata=as_owner
        )
        verified = await stub.VerifyTotp(
            iam_pb2.VerifyTotpRequest(
                code=pyotp.TOTP(enrolled.secret).now(), current_password=org.owner_password
            ),
            metadata=as_owner,
        )
        old_session = decode_access(verified.tokens.access_token, DEV_SECRETS["AUTH_SECRET_KEY"]).session_id
        locked_out = await rpc_error(
            stub.Login(password_only, metadata=anonymous), grpc.StatusCode.UNAUTHENTICATED
        )
        assert locked_out.reason == "mfa_required"

        # The reason is required and must say something; a blank one changes nothing.
        blank = manage(stack, "disable-totp", "--email", org.owner_email, "--reason", "  ")
        assert blank.returncode == 2 and "reason" in blank.stderr
        assert await sql(
            stack.admin_url, "SELECT totp_enabled FROM iam.users WHERE id = %s", (org.owner_id,)
        ) == [(True,)]

        done = manage(
            stack, "disable-totp", "--email", org.owner_email.upper(), "--reason", "ticket 4711: phone lost"
        )
        assert done.returncode == 0, done.stderr
        assert f"user_id={org.owner_id} org_id={org.org_id}" in done.stdout
        assert "sessions_ended=1" in done.stdout

        # The password alone signs in now; the session opened with the old second factor is over.
        assert (await stub.Login(password_only, metadata=anonymous)).tokens.access_token
        check = iam_pb2.CheckSessionRequest(session_id=old_session)
        assert not (await stub.CheckSession(check, metadata=as_role(org.org_id, "OWNER"))).active
        await rpc_error(
            stub.Refresh(
                iam_pb2.RefreshRequest(refresh_token=verified.tokens.refresh_token), metadata=anonymous
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )

    assert await sql(
        stack.admin_url,
        "SELECT totp_enabled, totp_secret_enc IS NULL, totp_last_step FROM iam.users WHERE id = %s",
        (org.owner_id,),
    ) == [(False, True, 0)]
    # Superuser URL: the audit and outbox rows of this org, read behind iam's back.
    audit_rows = await sql(
        stack.admin_url,
        "SELECT actor, role, resource_id, after FROM iam.admin_audit_logs "
        "WHERE org_id = %s AND action = 'iam.mfa.disable'",
        (org.org_id,),
    )
    assert audit_rows == [
        (
            "operator:console",
            "OPERATOR",
            org.owner_id,
            {"by": "operator console", "reason": "ticket 4711: phone lost"},
        )
    ]
    revoked = [
        events_pb2.SessionRevoked.FromString(payload)
        for (payload,) in await sql(
            stack.admin_url,
            "SELECT payload FROM iam.event_outbox WHERE org_id = %s AND subject = 'cws.iam.session.revoked'",
            (org.org_id,),
        )
    ]
    assert [(r.session_ids, r.reason) for r in revoked if r.reason == "operator_mfa_disabled"] == [
        ([old_session], "operator_mfa_disabled")
    ]

    # Again: there is no TOTP to turn off, and nothing is written.
    again = manage(stack, "disable-totp", "--email", org.owner_email, "--reason", "ticket 4711 again")
    assert again.returncode == 0, again.stderr
    assert "was not on, nothing changed" in again.stdout
    assert "sessions_ended" not in again.stdout
    assert (
        len(
            await sql(
                stack.admin_url,
                "SELECT 1 FROM iam.admin_audit_logs WHERE org_id = %s AND action = 'iam.mfa.disable'",
                (org.org_id,),
            )
        )
        == 1
    )


def test_disable_totp_needs_a_known_email_and_a_reason(stack):
    def console_rows() -> int:
        with psycopg.connect(stack.admin_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM iam.admin_audit_logs WHERE actor = 'operator:console'"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = console_rows()
    missing = manage(
        stack, "disable-totp", "--email", f"nobody-{uuid.uuid4().hex[:8]}@example.com", "--reason", "x"
    )
    assert missing.returncode != 0 and "no account with this email" in missing.stderr
    assert missing.stdout == "" and console_rows() == before

    no_reason = manage(stack, "disable-totp", "--email", "someone@example.com")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr


def test_console_mistakes_are_one_line_not_a_traceback(stack):
    """A reserved domain, a refused setting and a database that cannot be reached: each one sentence on
    stderr and its exit status (2 input or settings, 1 the database), never a traceback."""
    reserved = manage(
        stack,
        "create-org",
        "--name",
        "Acme",
        "--owner-email",
        "boss@acme.test",
        OWNER_PASSWORD="A-long-password-1",
    )
    assert reserved.returncode == 2 and "special-use or reserved" in reserved.stderr, reserved.stderr

    refused = manage(stack, "reset-password", "--email", "x@example.com", DATABASE_POOL_SIZE="many")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: refusing to start: DATABASE_POOL_SIZE:"), refused.stderr

    port = free_port()  # nothing listens there
    unreachable = manage(
        stack,
        "reset-password",
        "--email",
        "x@example.com",
        DATABASE_URL=f"postgresql://cws_app@127.0.0.1:{port}/cws",
    )
    assert unreachable.returncode == 1, unreachable.stderr
    assert unreachable.stderr.startswith(f"error: cannot use the database at cws_app@127.0.0.1:{port}/cws"), (
        unreachable.stderr
    )
    for result in (reserved, refused, unreachable):
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
