"""Invoice statuses and what the succeeded payments make of them (seed 002, "How to reconcile an
invoice safely"). Pure: today's date is passed in, never read from the clock, so reconcile and its
tests agree on what "the due date has passed" means.

Reconcile rules, in the seed's order:
- PAID when the succeeded funds cover the total (paid >= total; an issued 0-cent invoice is PAID);
- PARTIAL when some funds exist (0 < paid < total), whatever the due date;
- otherwise (nothing settled) the invoice is reopened: OVERDUE when the due date has passed
  (today > due date), else SENT. No payment is ever invented.
- DRAFT and VOID are left as they are (the seed's rules are for issued invoices); nothing is owed
  on them, so their outstanding balance is 0 and no manual payment fits.

Payments and refunds come separately, each as positive cents: a negative number then always means
bad data, and "paid" is payments minus refunds (a refund can take PAID back to PARTIAL or SENT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from libs.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, invalid


class InvoiceStatus(StrEnum):
    DRAFT = "DRAFT"
    SENT = "SENT"
    PARTIAL = "PARTIAL"
    PAID = "PAID"
    OVERDUE = "OVERDUE"
    VOID = "VOID"


# Statuses reconcile never changes: a draft was not issued, a void one was cancelled.
UNTOUCHED = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.VOID})


@dataclass(frozen=True)
class Settlement:
    """What reconcile writes and audits (the seed's before/after: status, paid, outstanding, count)."""

    status: InvoiceStatus
    paid_cents: int  # succeeded payments minus succeeded refunds
    outstanding_cents: int  # never below 0: an overpayment leaves nothing owed, not a credit
    succeeded_payment_count: int


def status_after_payments(
    status: InvoiceStatus | str,
    total_cents: int,
    due_date: date | None,
    today: date,
    payments_cents: Sequence[int],
    refunds_cents: Sequence[int] = (),
) -> Settlement:
    """The status the succeeded payments (manual and Stripe alike) give an invoice. A function of
    its arguments only, so running reconcile again on its own result changes nothing."""
    status = as_status(status)
    _check_amounts("payments_cents", payments_cents)
    _check_amounts("refunds_cents", refunds_cents)
    if not isinstance(total_cents, int) or isinstance(total_cents, bool) or total_cents < 0:
        raise invalid("total_cents", "must be a whole number of cents, 0 or more")
    paid = sum(payments_cents) - sum(refunds_cents)
    if paid < 0:
        raise invalid("refunds_cents", "must not add up to more than the payments")
    count = len(payments_cents)
    if status in UNTOUCHED:
        return Settlement(status, paid, 0, count)
    if paid >= total_cents:
        new = InvoiceStatus.PAID
    elif paid > 0:
        new = InvoiceStatus.PARTIAL
    elif due_date is not None and today > due_date:
        new = InvoiceStatus.OVERDUE
    else:
        new = InvoiceStatus.SENT
    return Settlement(new, paid, max(total_cents - paid, 0), count)


def check_manual_payment(amount_cents: int, outstanding_cents: int) -> None:
    """A manual payment must be positive and at most what is still owed: recording more would make a
    credit the suite has no place for (Stripe amounts are what Stripe settled, and are not checked)."""
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool) or amount_cents <= 0:
        raise invalid("amount_cents", "must be a whole number of cents above 0")
    if outstanding_cents <= 0:
        raise invalid("amount_cents", "the invoice has no outstanding balance")
    if amount_cents > outstanding_cents:
        raise invalid("amount_cents", f"must not exceed the outstanding balance of {outstanding_cents} cents")


def check_items_editable(status: InvoiceStatus | str) -> None:
    """Items (and so the totals snapshot) change only on a DRAFT: once issued, the stored tax
    snapshot is what reports and exports read, and a void invoice is closed. A 409, as booking
    answers a transition its booking's status does not allow."""
    status = as_status(status)
    if status is not InvoiceStatus.DRAFT:
        raise FailedPrecondition(
            f"cannot edit the items of an invoice that is {status.value}; only a DRAFT's items change",
            code="invoice_not_draft",
            violations=[FieldViolation("status", f"is {status.value}, must be DRAFT")],
        )


def as_status(value: InvoiceStatus | str) -> InvoiceStatus:
    """A status from its stored or sent name, or invalid("status") naming the six there are."""
    try:
        return InvoiceStatus(value)
    except ValueError:
        raise invalid("status", f"must be one of {', '.join(InvoiceStatus)}") from None


def _check_amounts(field: str, amounts: Sequence[int]) -> None:
    problems = [
        FieldViolation(f"{field}.{n}", "must be a whole number of cents above 0")
        for n, cents in enumerate(amounts)
        if not isinstance(cents, int) or isinstance(cents, bool) or cents <= 0
    ]
    if problems:
        raise InvalidArgument.of(problems)
