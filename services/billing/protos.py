"""Billing's rows and domain values as proto messages, shared by the servicer's parts."""

from __future__ import annotations

from typing import Any

from cws.billing.v1 import billing_pb2

from libs.common.convert import to_ts
from services.billing.invoices import Invoice
from services.billing.payments import Summary
from services.billing.status import Settlement
from services.billing.totals import LineItem


def line(item: LineItem) -> billing_pb2.LineItem:
    return billing_pb2.LineItem(
        description=item.description,
        quantity=str(item.quantity),
        unit_price_cents=item.unit_price_cents,
        tax_rate=str(item.tax_rate),
        amount_cents=item.amount_cents,
    )


def payment(row: Any) -> billing_pb2.Payment:
    return billing_pb2.Payment(
        id=str(row.id),
        provider=row.provider,
        method=row.method,
        amount_cents=row.amount_cents,
        currency=row.currency,
        status=row.status,
        reference=row.reference,
        received_at=to_ts(row.received_at),
        provider_ref=row.provider_ref or "",
    )


def refund(row: Any) -> billing_pb2.Refund:
    return billing_pb2.Refund(
        id=str(row.id),
        stripe_refund_id=row.stripe_refund_id,
        payment_intent_id=row.payment_intent_id,
        amount_cents=row.amount_cents,
        status=row.status,
        reason=row.reason,
        created_at=to_ts(row.created_at),
    )


def invoice(
    value: Invoice,
    summary: Summary | None,
    payments: list[Any] | None = None,
    refunds: list[Any] | None = None,
) -> billing_pb2.Invoice:
    totals = value.totals
    message = billing_pb2.Invoice(
        id=str(value.id),
        number=value.number or "",
        status=value.status.value,
        currency=value.currency,
        client_name=value.client_name,
        client_email=value.client_email,
        booking_id=str(value.booking_id) if value.booking_id else "",
        due_date=value.due_date.isoformat() if value.due_date else "",
        subtotal_cents=totals.subtotal_cents,
        taxable_subtotal_cents=totals.taxable_subtotal_cents,
        tax_cents=totals.tax_cents,
        tax_rate_basis=str(totals.tax_rate_basis),
        total_cents=totals.total_cents,
        paid_cents=summary.paid_cents if summary else 0,
        outstanding_cents=summary.outstanding_cents if summary else 0,
        items=[line(item) for item in value.items],
        payments=[payment(row) for row in payments or []],
        refunds=[refund(row) for row in refunds or []],
    )
    if value.issued_at:
        message.issued_at.CopyFrom(to_ts(value.issued_at))
    if value.sent_at:
        message.sent_at.CopyFrom(to_ts(value.sent_at))
    if value.created_at:
        message.created_at.CopyFrom(to_ts(value.created_at))
    if value.updated_at:
        message.updated_at.CopyFrom(to_ts(value.updated_at))
    return message


def settlement(value: Settlement) -> billing_pb2.Settlement:
    return billing_pb2.Settlement(
        status=value.status.value,
        paid_cents=value.paid_cents,
        outstanding_cents=value.outstanding_cents,
        succeeded_payments=value.succeeded_payment_count,
    )


def settlement_dict(value: Settlement) -> dict[str, Any]:
    """The audit's before/after fields (seed 002: status, paid, outstanding, succeeded payment count)."""
    return {
        "status": value.status.value,
        "paid_cents": value.paid_cents,
        "outstanding_cents": value.outstanding_cents,
        "succeeded_payments": value.succeeded_payment_count,
    }
