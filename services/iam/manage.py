"""Operator commands: `python -m services.iam.manage create-org --name ... --owner-email ...`,
`python -m services.iam.manage reset-password --email ...` (an org whose only owner is locked out),
`python -m services.iam.manage disable-totp --email ... --reason ...` (a user whose TOTP nobody in the
org can turn off: a sole owner who lost the authenticator, or whose secret no key decrypts) and
`python -m services.iam.manage reencrypt-secrets` (after rotating AUTH_SECRET_KEY, docs/auth.md).

The owner password is read from --owner-password or, better, the OWNER_PASSWORD environment
variable, so it stays out of shell history. Runs with the service's own DATABASE_URL (and, for
reencrypt-secrets, its AUTH_SECRET_KEY and AUTH_SECRET_KEY_PREVIOUS); beside `make dev`, with APP_ENV
unset or dev, what the environment lacks comes from .run/dev.env (libs/common/settings.py).
Mistakes are one line on stderr, no traceback: exit 2 for input or settings refused, 1 when the
database cannot be used."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from libs.common import context as request_context
from libs.common.context import RequestContext
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import ServiceError
from libs.common.settings import explain, may_read_dev_env, use_dev_env, where
from services.iam.accounts import CreatedOrg, create_org, operator_reset_password
from services.iam.mfa import operator_disable_totp
from services.iam.models import SCHEMA, event_tables
from services.iam.reencrypt import Report, reencrypt
from services.iam.settings import IamSettings


async def create_org_with_owner(
    db: Database, *, name: str, email: str, password: str, full_name: str = "", time_zone: str = "UTC"
) -> CreatedOrg:
    """`create_org` in a unit of work of its own: this console is a boundary like the servicer, and
    so are the dev seed (tools/dev.py) and the test fixtures, which call it too."""
    async with unit_of_work(db) as uow:
        return await create_org(
            uow, name=name, email=email, password=password, full_name=full_name, time_zone=time_zone
        )


async def _create_org(args: argparse.Namespace) -> int:
    settings = IamSettings()
    settings.configure_password_hashing()
    db = Database(settings.database_url, schema=SCHEMA, tables=event_tables)
    password = args.owner_password or os.environ.get("OWNER_PASSWORD", "")
    try:
        created = await create_org_with_owner(
            db, name=args.name, email=args.owner_email, password=password, time_zone=args.time_zone
        )
    except ServiceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(f"org_id={created.org_id} owner_id={created.owner_id}")
    return 0


@asynccontextmanager
async def _operator_unit_of_work(settings: IamSettings) -> AsyncIterator[UnitOfWork]:
    """One transaction acting as the operator at the console (audited as `operator:console`): the
    console is a boundary like the servicer, so it owns the transaction."""
    db = Database(settings.database_url, schema=SCHEMA, tables=event_tables)
    token = request_context.set_current(
        RequestContext(principal_id="operator:console", role="OPERATOR", request_id=uuid.uuid4().hex)
    )
    try:
        async with unit_of_work(db) as uow:
            yield uow
    finally:
        request_context.reset_current(token)
        await db.dispose()


async def _reset_password(args: argparse.Namespace) -> int:
    settings = IamSettings()
    settings.configure_password_hashing()
    try:
        async with _operator_unit_of_work(settings) as uow:
            org_id, temp = await operator_reset_password(uow, settings, email=args.email)
    except ServiceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
    print(f"org_id={org_id} temp_password={temp}")
    return 0


async def _disable_totp(args: argparse.Namespace) -> int:
    try:
        async with _operator_unit_of_work(IamSettings()) as uow:
            done = await operator_disable_totp(uow, email=args.email, reason=args.reason)
    except ServiceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
    ids = f"user_id={done.user_id} org_id={done.org_id}"
    if not done.had_totp:
        print(f"two-factor authentication was not on, nothing changed: {ids}")
    else:
        print(f"two-factor authentication turned off: {ids} sessions_ended={done.revoked_sessions}")
    return 0


async def _reencrypt_secrets(args: argparse.Namespace) -> int:
    settings = IamSettings()
    db = Database(settings.database_url, schema=SCHEMA, tables=event_tables)
    try:
        report = await reencrypt(db, settings.auth_secret_keys, args.org)
    finally:
        await db.dispose()
    for name, tally in (("totp_secrets", report.totp_secrets), ("temp_passwords", report.temp_passwords)):
        print(
            f"{name}: re-encrypted={tally.resealed} already_current={tally.current} "
            f"unreadable={len(tally.unreadable)}"
        )
    return _report_unreadable(report)


def _report_unreadable(report: Report) -> int:
    """Exit status 1, and what to do, when some rows open under no configured key: the operator
    must know before dropping AUTH_SECRET_KEY_PREVIOUS (a key missing from it can still be added)."""
    lost_totp, lost_passwords = report.totp_secrets.unreadable, report.temp_passwords.unreadable
    if not lost_totp and not lost_passwords:
        return 0
    print(
        f"error: {len(lost_totp)} TOTP secret(s) and {len(lost_passwords)} temporary password(s) open "
        "under neither AUTH_SECRET_KEY nor any key in AUTH_SECRET_KEY_PREVIOUS. Add the key they were "
        "encrypted under to AUTH_SECRET_KEY_PREVIOUS and run this again; if that key is lost, an owner "
        "turns off each such user's two-factor authentication (POST /v1/auth/2fa/disable, or for a sole "
        "owner `python -m services.iam.manage disable-totp`) and an admin resets each such temporary "
        "password again.",
        file=sys.stderr,
    )
    for row in lost_totp:
        print(f"  totp secret: {row}", file=sys.stderr)
    for row in lost_passwords:
        print(f"  temporary password: {row}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.iam.manage")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-org", help="create an org and its owner")
    create.add_argument("--name", required=True)
    create.add_argument("--owner-email", required=True)
    create.add_argument("--owner-password", default="")
    create.add_argument("--time-zone", default="UTC")
    reset = commands.add_parser(
        "reset-password", help="new temporary password for an account (unlocks it, ends its sessions)"
    )
    reset.add_argument("--email", required=True)
    untotp = commands.add_parser(
        "disable-totp",
        help="turn off an account's two-factor authentication (ends its sessions, audited with --reason)",
    )
    untotp.add_argument("--email", required=True)
    untotp.add_argument("--reason", required=True, help="why, for the audit log (e.g. the ticket)")
    rekey = commands.add_parser(
        "reencrypt-secrets",
        help="re-encrypt every TOTP secret and waiting temporary password under the current "
        "AUTH_SECRET_KEY (then AUTH_SECRET_KEY_PREVIOUS can be dropped)",
    )
    rekey.add_argument(
        "--org",
        type=uuid.UUID,
        action="append",
        default=[],
        help="only this org (repeatable); default every org",
    )
    args = parser.parse_args(argv)
    run = {
        "create-org": _create_org,
        "reset-password": _reset_password,
        "disable-totp": _disable_totp,
        "reencrypt-secrets": _reencrypt_secrets,
    }
    # The hint only where .run/dev.env would have been read had make dev been running.
    hint = " (beside make dev: run this in its checkout while make dev runs)" if may_read_dev_env() else ""
    if use_dev_env("iam"):
        hint = ""
    try:
        return asyncio.run(run[args.command](args))
    except ValidationError as error:
        print(f"error: refusing to start: {explain(error)}{hint}", file=sys.stderr)
        return 2
    except (DBAPIError, psycopg.Error, OSError) as error:
        url = os.environ.get("DATABASE_URL") or IamSettings.model_fields["database_url"].default
        reason = " ".join(str(getattr(error, "orig", None) or error).split())  # libpq's spans lines
        print(
            f"error: cannot use the database at {where(url)} (DATABASE_URL): {reason}{hint}", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
