"""Re-encrypting what iam keeps sealed (TOTP secrets, waiting temporary passwords) under the current
AUTH_SECRET_KEY: `python -m services.iam.manage reencrypt-secrets`. Sign-ins re-encrypt a TOTP secret
lazily (`sessions.resealed`); this does every row at once, so AUTH_SECRET_KEY_PREVIOUS can be dropped
without waiting for every MFA user to sign in, and it lists the rows no configured key opens.

RLS is forced on iam's tables, so each org is walked in a unit of work of its own, the orgs found
through iam.list_orgs (the one door across orgs). A row is rewritten only while it still holds what
was read (compare-and-set): a sign-in, a TOTP disable or a claim meanwhile is never overwritten."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import Column, Table, func, select, update

from libs.common.db import Database, UnitOfWork, unit_of_work
from services.iam import accounts, temp_passwords, totp
from services.iam.models import temp_password_handoffs, users
from services.iam.sealing import Sealer

ORG_PAGE = 500


@dataclass
class Tally:
    resealed: int = 0
    current: int = 0
    # "org <id> user <id>" of each row no configured key opens.
    unreadable: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.resealed += other.resealed
        self.current += other.current
        self.unreadable += other.unreadable


@dataclass
class Report:
    totp_secrets: Tally = field(default_factory=Tally)
    temp_passwords: Tally = field(default_factory=Tally)

    def add(self, other: Report) -> None:
        self.totp_secrets.add(other.totp_secrets)
        self.temp_passwords.add(other.temp_passwords)


async def _reseal(
    uow: UnitOfWork,
    sealer: Sealer,
    table: Table,
    key: Column[Any],
    sealed: Column[Any],
    rows: Sequence[tuple[uuid.UUID, str]],
) -> Tally:
    """Seals each (key, value) of `rows` again under the current key where an earlier one opened it."""
    tally = Tally()
    for row_key, value in rows:
        try:
            opened = sealer.open(value)
        except InvalidToken:
            tally.unreadable.append(f"org {uow.org_id} user {row_key}")
            continue
        if not opened.stale:
            tally.current += 1
            continue
        written = await uow.session.execute(
            update(table)
            .where(key == row_key, sealed == value)
            .values({sealed.name: sealer.seal(opened.plain)})
        )
        tally.resealed += written.rowcount  # type: ignore[attr-defined]
    return tally


async def reencrypt_org(uow: UnitOfWork, keys: Sequence[str]) -> Report:
    """Every TOTP secret and waiting temporary password of `uow`'s org, under the current key (the
    first of `keys`)."""
    totp_rows = (
        await uow.session.execute(
            select(users.c.id, users.c.totp_secret_enc).where(users.c.totp_secret_enc.is_not(None))
        )
    ).tuples()
    handoff = temp_password_handoffs.c
    # Expired rows are refused at claim and pruned by the sweeper: nothing waits in them.
    waiting = (
        await uow.session.execute(
            select(handoff.user_id, handoff.password_enc).where(handoff.expires_at > func.now())
        )
    ).tuples()
    return Report(
        totp_secrets=await _reseal(
            uow, Sealer(totp.LABEL, keys), users, users.c.id, users.c.totp_secret_enc, totp_rows.all()
        ),
        temp_passwords=await _reseal(
            uow,
            Sealer(temp_passwords.LABEL, keys),
            temp_password_handoffs,
            handoff.user_id,
            handoff.password_enc,
            waiting.all(),
        ),
    )


async def every_org(db: Database, page_size: int = ORG_PAGE) -> AsyncIterator[uuid.UUID]:
    """Every org's id, in id order, a page at a time."""
    after: uuid.UUID | None = None
    while True:
        async with unit_of_work(db) as uow:
            page = await accounts.list_orgs(uow, after=after, limit=page_size)
        for org in page:
            yield org.id
        if len(page) < page_size:
            return
        after = page[-1].id


async def reencrypt(db: Database, keys: Sequence[str], orgs: Sequence[uuid.UUID] = ()) -> Report:
    """`orgs`, or every org, one unit of work each: an org's rows are rewritten together or not at all."""
    report = Report()
    targets = orgs or [org_id async for org_id in every_org(db)]
    for org_id in targets:
        async with unit_of_work(db, org_id) as uow:
            report.add(await reencrypt_org(uow, keys))
    return report
