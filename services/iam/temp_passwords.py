"""Temporary passwords: how long they work, and the hand-off to notify (issue 9).

With EMAIL_TEMP_PASSWORDS=true the onboarding and reset emails carry the temporary password. It used
to travel in the user.created / user.password_reset events, so it stayed in iam's event_outbox, in
the JetStream stream for its retention, and in any dead letter. Now the event only says a password is
waiting; iam keeps it in temp_password_handoffs until notify claims it (IamService.
ClaimTemporaryPassword), and the claim deletes the row in the same transaction. A row also goes when
the user changes their password or is given another, and when it expires (AUTH_TEMP_PASSWORD_TTL_
MINUTES, with the password itself), which iam's sweeper enforces (`prune_expired`).

Stored encrypted, not as plaintext until claimed: the key is derived from AUTH_SECRET_KEY, which
lives in iam's environment and never in the database, so a database dump, a backup or a replica
read while a row waits yields no password. The plaintext names its user, so a ciphertext copied onto
another user's row does not decrypt as theirs. Rows sealed before a key rotation still open under
AUTH_SECRET_KEY_PREVIOUS (sealing.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import Database, UnitOfWork
from libs.common.logs import get_logger
from services.iam.models import temp_password_handoffs
from services.iam.sealing import Sealer

log = get_logger(__name__)
# A key of its own (not the TOTP one): the label separates the two uses of AUTH_SECRET_KEY.
LABEL = b"cws-temp-password-handoff-v1:"

# How often the sweeper drops expired hand-offs and sign-up requests. Expired rows are refused at
# once anyway (`claim` and the sign-up confirmation check the expiry); this only bounds how long a
# dead ciphertext or hash stays on disk.
PRUNE_INTERVAL_SECONDS = 300.0


def expires_at(now: datetime, ttl_minutes: int) -> datetime:
    return now + timedelta(minutes=ttl_minutes)


def seal(user_id: uuid.UUID, password: str, auth_secret: str) -> str:
    """Under the current AUTH_SECRET_KEY."""
    return Sealer(LABEL, [auth_secret]).seal(f"{user_id}:{password}")


def unseal(user_id: uuid.UUID, sealed: str, auth_secrets: Sequence[str]) -> str | None:
    """The password, or None when the row was not sealed for this user under any of `auth_secrets`
    (the current key first, then the earlier ones)."""
    try:
        plain = Sealer(LABEL, auth_secrets).open(sealed).plain
    except InvalidToken:
        # Nothing to email: the user gets the note without the password, and an admin resets it.
        log.warning(
            "temp_password_unreadable",
            user_id=str(user_id),
            hint="no configured key decrypts this waiting temporary password: was AUTH_SECRET_KEY "
            "changed without listing the old key in AUTH_SECRET_KEY_PREVIOUS?",
        )
        return None
    owner, _, password = plain.partition(":")
    return password if owner == str(user_id) and password else None


async def hold(
    uow: UnitOfWork, *, user_id: uuid.UUID, password: str, until: datetime, auth_secret: str
) -> None:
    """Keep `password` for notify to claim, replacing any earlier one of this user."""
    assert uow.org_id is not None
    sealed = seal(user_id, password, auth_secret)
    statement = pg_insert(temp_password_handoffs).values(
        user_id=user_id, org_id=uow.org_id, password_enc=sealed, expires_at=until
    )
    await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=[temp_password_handoffs.c.user_id],
            set_={"password_enc": sealed, "expires_at": until, "created_at": func.now()},
        )
    )


async def drop(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """The user chose their own password: nothing is waiting to be emailed any more."""
    await uow.session.execute(
        delete(temp_password_handoffs).where(temp_password_handoffs.c.user_id == user_id)
    )


async def claim(uow: UnitOfWork, *, user_id: uuid.UUID, auth_secrets: Sequence[str]) -> str | None:
    """The waiting password, deleted in this unit of work; None when nothing (unexpired) waits."""
    row = (
        await uow.session.execute(
            delete(temp_password_handoffs)
            .where(temp_password_handoffs.c.user_id == user_id)
            .returning(
                temp_password_handoffs.c.password_enc,
                (temp_password_handoffs.c.expires_at > func.now()).label("live"),
            )
        )
    ).first()
    if row is None or not row.live:  # an expired one is deleted all the same
        return None
    return unseal(user_id, row.password_enc, auth_secrets)


async def prune_expired(db: Database) -> tuple[int, int]:
    """(temporary passwords, sign-up requests) deleted: iam.prune_expired_handoffs is the one door
    across orgs, as the table owner."""
    async with db.sessions() as session, session.begin():
        row = (await session.execute(text("SELECT * FROM iam.prune_expired_handoffs()"))).one()
    return int(row.temp_passwords), int(row.signups)


async def sweep(db: Database, interval_seconds: float = PRUNE_INTERVAL_SECONDS) -> None:
    """iam's background sweeper: runs until cancelled, and outlives a database that is away."""
    while True:
        try:
            passwords, signups = await prune_expired(db)
            if passwords or signups:
                log.info("expired_handoffs_pruned", temp_passwords=passwords, signups=signups)
        except Exception as exc:  # the database away: try again at the next round
            log.warning("expired_handoffs_prune_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
