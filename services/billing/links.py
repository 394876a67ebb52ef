"""Public links to an invoice: what `send` emails, and what `/v1/public/invoices/{token}` opens.

A token is 32 random bytes (URL-safe base64, 43 characters); only its SHA-256 is stored, so neither a
database read nor a backup gives anyone a working link. The token finds its org through
`billing.invoice_for_token` (SECURITY DEFINER, the one narrow cross-org lookup), and the request then
runs in that org under RLS like any other. A link stays good while its invoice exists; every send
mints a new one (the old emails keep working), and a DRAFT is never reachable: it has no link."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from sqlalchemy import insert, text

from libs.common.db import UnitOfWork
from libs.common.errors import NotFound
from services.billing.models import invoice_public_tokens

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def mint(uow: UnitOfWork, invoice_id: uuid.UUID) -> str:
    """A new public token for the invoice, stored as its hash in this unit of work."""
    token = secrets.token_urlsafe(32)
    await uow.session.execute(
        insert(invoice_public_tokens).values(
            token_hash=token_hash(token), org_id=uow.org_id, invoice_id=invoice_id
        )
    )
    return token


async def resolve(uow: UnitOfWork, token: str) -> uuid.UUID:
    """The invoice the token opens, with the unit of work switched to its org; NotFound for anything
    else (a malformed token is not looked up: it cannot match)."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise NotFound("invoice not found", code="invoice_not_found")
    row = (
        await uow.session.execute(
            text("SELECT org_id, invoice_id FROM billing.invoice_for_token(:hash)"),
            {"hash": token_hash(token)},
        )
    ).first()
    if row is None:
        raise NotFound("invoice not found", code="invoice_not_found")
    await uow.set_org(row.org_id)
    return row.invoice_id  # type: ignore[no-any-return]
