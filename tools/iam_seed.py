"""Test data written through IAM's own code, for tests outside services/iam (which may not import it:
services are independent of each other, and tools is where the shared test kit lives).

`create_org` is what the operator command `python -m services.iam.manage create-org` does, and
`manage` runs that console itself;
`hold_temp_password` is what iam does with EMAIL_TEMP_PASSWORDS=true when it gives a user a
temporary password (keep it, sealed, for notify to claim)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.common.db import Database, unit_of_work
from tools.devstack import ROOT


@dataclass(frozen=True)
class CreatedOrg:
    org_id: str
    owner_id: str


def iam_database(url: str, pool_size: int = 1) -> Database:
    """IAM's schema at `url` (the runtime role's URL), as iam opens it. The caller disposes of it."""
    from services.iam.models import SCHEMA, event_tables

    return Database(url, schema=SCHEMA, tables=event_tables, pool_size=pool_size)


def cheap_password_hashing() -> None:
    """The cheapest argon2id cost, in this process (as TEST_PASSWORD_HASHING does in iam's)."""
    from services.iam import passwords

    passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)


async def create_org(
    db: Database, *, name: str, email: str, password: str, time_zone: str = "UTC"
) -> CreatedOrg:
    """An org and its owner, in `db` (from `iam_database`), hashing the password at this process's
    argon2id cost (`cheap_password_hashing` for tests)."""
    from services.iam.manage import create_org_with_owner

    created = await create_org_with_owner(db, name=name, email=email, password=password, time_zone=time_zone)
    return CreatedOrg(str(created.org_id), str(created.owner_id))


async def hold_temp_password(
    db: Database,
    *,
    org_id: str,
    user_id: str,
    password: str,
    auth_secret: str,
    ttl: timedelta = timedelta(hours=1),
) -> None:
    """`password` waits for notify's claim, as iam keeps it with EMAIL_TEMP_PASSWORDS=true."""
    from services.iam import temp_passwords

    async with unit_of_work(db, org_id) as uow:
        await temp_passwords.hold(
            uow,
            user_id=uuid.UUID(user_id),
            password=password,
            until=datetime.now(UTC) + ttl,
            auth_secret=auth_secret,
        )


def manage(stack: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The operator console (`python -m services.iam.manage ...`) as an operator runs it: with iam's
    environment (`stack.env()`), plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "services.iam.manage", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
