"""The operator console (`python -m services.iam.manage`): creating an org with its owner, rescuing
an org whose only owner is locked out, and walking every org to re-encrypt secrets (the command
itself runs in gateway/tests/test_key_rotation.py, around a key rotation)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg

from services.iam.reencrypt import every_org
from tools.devstack import ROOT
from tools.iam_seed import iam_database


def manage(stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.iam.manage", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


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
