"""Reconcile's status rules alone (seed 002, "How to reconcile an invoice safely"), and the checks
on manual payments and item edits."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from libs.common.errors import FailedPrecondition, InvalidArgument
from services.billing.status import (
    InvoiceStatus,
    Settlement,
    check_items_editable,
    check_manual_payment,
    status_after_payments,
)

S = InvoiceStatus
TODAY = date(2031, 5, 5)
PAST = TODAY - timedelta(days=1)
FUTURE = TODAY + timedelta(days=1)
ISSUED = [S.SENT, S.PARTIAL, S.PAID, S.OVERDUE]


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


@pytest.mark.parametrize("status", ISSUED)
@pytest.mark.parametrize("due", [PAST, TODAY, FUTURE, None])
def test_paid_when_succeeded_funds_cover_the_total(status, due):
    assert status_after_payments(status, 10_000, due, TODAY, [4_000, 6_000]) == Settlement(
        S.PAID, 10_000, 0, 2
    )


def test_an_overpayment_is_paid_with_nothing_outstanding():
    assert status_after_payments(S.SENT, 10_000, PAST, TODAY, [10_500]) == Settlement(S.PAID, 10_500, 0, 1)


@pytest.mark.parametrize("status", ISSUED)
@pytest.mark.parametrize("due", [PAST, TODAY, FUTURE, None])
def test_partial_when_some_funds_exist_even_past_due(status, due):
    assert status_after_payments(status, 10_000, due, TODAY, [2_500]) == Settlement(
        S.PARTIAL, 2_500, 7_500, 1
    )


@pytest.mark.parametrize("status", ISSUED)
def test_nothing_settled_and_due_date_passed_is_overdue(status):
    assert status_after_payments(status, 10_000, PAST, TODAY, []) == Settlement(S.OVERDUE, 0, 10_000, 0)


@pytest.mark.parametrize("status", ISSUED)
@pytest.mark.parametrize("due", [TODAY, FUTURE, None])
def test_nothing_settled_and_not_yet_past_due_is_sent(status, due):
    # The due date itself has not passed; an invoice without one never becomes overdue.
    assert status_after_payments(status, 10_000, due, TODAY, []) == Settlement(S.SENT, 0, 10_000, 0)


def test_a_paid_invoice_without_settled_funds_is_reopened_not_given_a_payment():
    # The seed's repair: a PAID invoice with no succeeded payments goes back to SENT or OVERDUE.
    assert status_after_payments(S.PAID, 10_000, FUTURE, TODAY, []).status is S.SENT
    assert status_after_payments(S.PAID, 10_000, PAST, TODAY, []).status is S.OVERDUE


@pytest.mark.parametrize("status", [S.DRAFT, S.VOID])
def test_draft_and_void_are_left_untouched_and_owe_nothing(status):
    assert status_after_payments(status, 10_000, PAST, TODAY, []) == Settlement(status, 0, 0, 0)
    assert status_after_payments(status, 10_000, PAST, TODAY, [10_000]).status is status


def test_an_issued_zero_total_invoice_is_paid():
    assert status_after_payments(S.SENT, 0, PAST, TODAY, []) == Settlement(S.PAID, 0, 0, 0)


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("payments", [[], [2_500], [10_000], [6_000, 6_000]])
@pytest.mark.parametrize("due", [PAST, FUTURE])
def test_reconcile_is_idempotent(status, payments, due):
    first = status_after_payments(status, 10_000, due, TODAY, payments)
    assert status_after_payments(status, 10_000, due, TODAY, payments) == first
    # Running it again on the invoice as the first run left it changes nothing either.
    assert status_after_payments(first.status, 10_000, due, TODAY, payments) == first


def test_refunds_take_paid_back_to_partial_then_reopen():
    assert status_after_payments(S.PAID, 10_000, PAST, TODAY, [10_000], [3_000]) == Settlement(
        S.PARTIAL, 7_000, 3_000, 1
    )
    assert status_after_payments(S.PAID, 10_000, PAST, TODAY, [10_000], [3_000, 7_000]).status is S.OVERDUE
    assert status_after_payments(S.PAID, 10_000, FUTURE, TODAY, [10_000], [10_000]).status is S.SENT


def test_a_whole_invoice_life():
    total, due = 20_000, FUTURE
    steps = [
        ([], [], TODAY, S.SENT),
        ([5_000], [], TODAY, S.PARTIAL),
        ([5_000], [], due + timedelta(days=3), S.PARTIAL),  # past due but some funds: still PARTIAL
        ([5_000, 15_000], [], due + timedelta(days=3), S.PAID),
        ([5_000, 15_000], [1_000], due + timedelta(days=3), S.PARTIAL),
        ([5_000, 15_000], [20_000], due + timedelta(days=3), S.OVERDUE),
    ]
    status = S.SENT
    for payments, refunds, today, expected in steps:
        status = status_after_payments(status, total, due, today, payments, refunds).status
        assert status is expected


def test_statuses_may_be_given_by_name():
    assert status_after_payments("SENT", 100, None, TODAY, [100]).status is S.PAID
    with pytest.raises(InvalidArgument) as raised:
        status_after_payments("PENDING", 100, None, TODAY, [])
    assert fields(raised) == ["status"]


def test_zero_or_negative_payments_and_refunds_are_refused_by_position():
    with pytest.raises(InvalidArgument) as raised:
        status_after_payments(S.SENT, 100, None, TODAY, [50, 0, -5])
    assert fields(raised) == ["payments_cents.1", "payments_cents.2"]
    with pytest.raises(InvalidArgument) as raised:
        status_after_payments(S.SENT, 100, None, TODAY, [50], [-50])
    assert fields(raised) == ["refunds_cents.0"]


def test_refunds_above_the_payments_are_refused():
    with pytest.raises(InvalidArgument) as raised:
        status_after_payments(S.PAID, 100, None, TODAY, [100], [60, 60])
    assert fields(raised) == ["refunds_cents"]


@pytest.mark.parametrize("total", [-1, True])
def test_a_negative_total_is_refused(total):
    with pytest.raises(InvalidArgument) as raised:
        status_after_payments(S.SENT, total, None, TODAY, [])
    assert fields(raised) == ["total_cents"]


def test_a_manual_payment_up_to_the_outstanding_balance_is_accepted():
    check_manual_payment(1, 7_500)
    check_manual_payment(7_500, 7_500)


@pytest.mark.parametrize(
    ("amount", "outstanding", "says"),
    [
        (0, 7_500, "above 0"),
        (-100, 7_500, "above 0"),
        (True, 7_500, "above 0"),
        (7_501, 7_500, "outstanding balance of 7500 cents"),
        (100, 0, "no outstanding balance"),
    ],
)
def test_a_bad_manual_payment_is_refused_naming_the_amount(amount, outstanding, says):
    with pytest.raises(InvalidArgument) as raised:
        check_manual_payment(amount, outstanding)
    assert fields(raised) == ["amount_cents"] and says in raised.value.detail


def test_only_a_drafts_items_may_be_edited():
    check_items_editable(S.DRAFT)
    check_items_editable("DRAFT")
    for status in [*ISSUED, S.VOID]:
        with pytest.raises(FailedPrecondition) as raised:
            check_items_editable(status)
        assert raised.value.code == "invoice_not_draft"
        assert [v.field for v in raised.value.violations] == ["status"]
        assert status.value in raised.value.detail
