"""Stripe Checkout for paying an invoice's balance and a booking's deposit, and Stripe customers.

Order of work, so that nothing is half-written whatever fails:
1. read what is to be paid (one short transaction, nothing written);
2. ask Stripe (no transaction open meanwhile): a customer for the client (once per org and email,
   remembered in `stripe_customers`) and a Checkout Session. Each call carries an idempotency key made
   from what it is for, so a retry after a timeout gets the same object back, never a second one;
3. record the session (second transaction). If that fails, the session exists at Stripe only; paying
   it still works, since its metadata names the org and invoice and the webhook needs nothing more.
While Stripe is away the breaker answers at step 2 with StripeUnavailable (503 with Retry-After) and
nothing was written. A second click while a session for the same amount is open reuses it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import FailedPrecondition, FieldViolation, Unavailable
from services.billing import invoices, payments
from services.billing.models import checkout_sessions, stripe_customers
from services.billing.settings import BillingSettings
from services.billing.status import InvoiceStatus
from services.billing.stripe_api import StripeApi

PAYABLE = frozenset({InvoiceStatus.SENT, InvoiceStatus.PARTIAL, InvoiceStatus.OVERDUE})
# Stripe expires a Checkout Session after 24 hours; one this old is not handed out again.
REUSE_WITHIN = timedelta(hours=23)


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str
    amount_cents: int
    currency: str


def stripe_or_unavailable(stripe: StripeApi | None) -> StripeApi:
    if stripe is None:
        raise Unavailable(
            "card payments are not set up here (no STRIPE_SECRET_KEY)", code="stripe_not_configured"
        )
    return stripe


async def for_invoice(
    db: Database,
    org_id: uuid.UUID,
    stripe: StripeApi | None,
    settings: BillingSettings,
    invoice_id: uuid.UUID,
) -> Checkout:
    """A Checkout Session for what is still owed on an issued invoice."""
    api = stripe_or_unavailable(stripe)
    async with unit_of_work(db, org_id) as uow:
        invoice = await invoices.get(uow, invoice_id)
        if invoice.status not in PAYABLE:
            raise FailedPrecondition(
                f"an invoice that is {invoice.status} cannot be paid; only SENT, PARTIAL or OVERDUE ones",
                code="invoice_not_payable",
                violations=[FieldViolation("status", f"is {invoice.status}")],
            )
        summary = (await payments.summaries(uow, [invoice.id]))[invoice.id]
        amount = summary.outstanding_cents
        if amount <= 0:
            raise FailedPrecondition("nothing is outstanding on this invoice", code="invoice_not_payable")
        reusable = await _open_session(uow, invoice_id=invoice.id, amount_cents=amount)
        if reusable is not None:
            return reusable
        customer_id = await _known_customer(uow, invoice.client_email)
    customer_id = customer_id or await _new_customer(api, org_id, invoice.client_email, invoice.client_name)
    metadata = {"org_id": str(org_id), "invoice_id": str(invoice.id), "purpose": "invoice"}
    if invoice.booking_id:
        metadata["booking_id"] = str(invoice.booking_id)
    session = await api.create_checkout_session(
        amount_cents=amount,
        currency=invoice.currency.lower(),
        description=f"Invoice {invoice.number}",
        customer_id=customer_id,
        metadata=metadata,
        success_url=_url(settings.stripe_success_url, invoice_id=str(invoice.id)),
        cancel_url=_url(settings.stripe_cancel_url, invoice_id=str(invoice.id)),
        # Same invoice, same balance, same payments so far: the same session.
        idempotency_key=f"checkout:invoice:{invoice.id}:{amount}:{summary.succeeded_payments}",
    )
    async with unit_of_work(db, org_id) as uow:
        await _remember(uow, invoice.client_email, customer_id)
        await _record(
            uow, session.id, session.url, "invoice", amount, invoice.currency, invoice_id=invoice.id
        )
    return Checkout(session.id, session.url, amount, invoice.currency)


async def for_deposit(
    db: Database,
    org_id: uuid.UUID,
    stripe: StripeApi | None,
    settings: BillingSettings,
    *,
    booking_id: uuid.UUID,
    amount_cents: int,
    currency: str,
    client_email: str,
    client_name: str,
) -> Checkout:
    """A Checkout Session for a booking's deposit (the caller checked the booking waits for one)."""
    api = stripe_or_unavailable(stripe)
    async with unit_of_work(db, org_id) as uow:
        reusable = await _open_session(uow, booking_id=booking_id, amount_cents=amount_cents)
        if reusable is not None:
            return reusable
        customer_id = await _known_customer(uow, client_email)
    customer_id = customer_id or await _new_customer(api, org_id, client_email, client_name)
    session = await api.create_checkout_session(
        amount_cents=amount_cents,
        currency=currency.lower(),
        description="Booking deposit",
        customer_id=customer_id,
        metadata={"org_id": str(org_id), "booking_id": str(booking_id), "purpose": "deposit"},
        success_url=_url(settings.stripe_success_url, booking_id=str(booking_id)),
        cancel_url=_url(settings.stripe_cancel_url, booking_id=str(booking_id)),
        idempotency_key=f"checkout:deposit:{booking_id}:{amount_cents}",
    )
    async with unit_of_work(db, org_id) as uow:
        await _remember(uow, client_email, customer_id)
        await _record(uow, session.id, session.url, "deposit", amount_cents, currency, booking_id=booking_id)
    return Checkout(session.id, session.url, amount_cents, currency)


def deposit_amount(price_cents: int, settings: BillingSettings) -> int:
    """DEPOSIT_PERCENT of the price (rounded half up to the cent), at least DEPOSIT_MIN_CENTS, never
    more than the price."""
    share = (price_cents * settings.deposit_percent * 2 + 100) // 200
    return min(price_cents, max(share, settings.deposit_min_cents))


def _url(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


async def _open_session(
    uow: UnitOfWork,
    *,
    amount_cents: int,
    invoice_id: uuid.UUID | None = None,
    booking_id: uuid.UUID | None = None,
) -> Checkout | None:
    target = (
        checkout_sessions.c.invoice_id == invoice_id
        if invoice_id is not None
        else checkout_sessions.c.booking_id == booking_id
    )
    row = (
        await uow.session.execute(
            select(checkout_sessions)
            .where(
                target,
                checkout_sessions.c.status == "open",
                checkout_sessions.c.amount_cents == amount_cents,
                checkout_sessions.c.created_at > func.now() - REUSE_WITHIN,
            )
            .order_by(checkout_sessions.c.created_at.desc())
            .limit(1)
        )
    ).first()
    return Checkout(row.id, row.url, row.amount_cents, row.currency) if row is not None else None


async def _new_customer(api: StripeApi, org_id: uuid.UUID, email: str, name: str) -> str:
    """A Stripe customer for the client; the key makes a retry (or a race) get the same one back."""
    return await api.create_customer(
        email, name, {"org_id": str(org_id)}, idempotency_key=f"customer:{org_id}:{email.strip().lower()}"
    )


async def _known_customer(uow: UnitOfWork, email: str) -> str | None:
    found = await uow.session.execute(
        select(stripe_customers.c.customer_id).where(stripe_customers.c.email == email.strip().lower())
    )
    return found.scalar_one_or_none()


async def _remember(uow: UnitOfWork, email: str, customer_id: str) -> None:
    await uow.session.execute(
        pg_insert(stripe_customers)
        .values(org_id=uow.org_id, email=email.strip().lower(), customer_id=customer_id)
        .on_conflict_do_nothing()
    )


async def _record(
    uow: UnitOfWork,
    session_id: str,
    url: str,
    purpose: str,
    amount_cents: int,
    currency: str,
    *,
    invoice_id: uuid.UUID | None = None,
    booking_id: uuid.UUID | None = None,
) -> None:
    await uow.session.execute(
        pg_insert(checkout_sessions)
        .values(
            id=session_id,
            org_id=uow.org_id,
            purpose=purpose,
            invoice_id=invoice_id,
            booking_id=booking_id,
            amount_cents=amount_cents,
            currency=currency.upper(),
            url=url,
        )
        .on_conflict_do_nothing()
    )
