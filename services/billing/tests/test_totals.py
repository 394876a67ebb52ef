"""Invoice totals alone, without a database: exact cents, the rounding rule, refusals by field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.common.errors import InvalidArgument
from services.billing.totals import LineItem, Totals, line_item, recalculate_totals


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def item(quantity: Any = 1, cents: int = 10_000, rate: Any = "13", description: str = "Cleaning") -> LineItem:
    return line_item(description, quantity, cents, rate)


def test_mixed_taxable_and_untaxed_lines_in_exact_cents():
    totals = recalculate_totals([item(1, 12_000, "13"), item(2, 1_550, "0", "Supplies")])
    assert totals == Totals(
        subtotal_cents=15_100,
        taxable_subtotal_cents=12_000,
        tax_cents=1_560,
        total_cents=16_660,
        tax_rate_basis=Decimal("13.0000"),
    )


@pytest.mark.parametrize(
    ("cents", "tax"),
    [(10, 1), (30, 2), (50, 3), (70, 4), (9, 0), (11, 1)],  # 0.5, 1.5, 2.5, 3.5, 0.45, 0.55 cents
)
def test_half_a_cent_of_tax_rounds_up(cents, tax):
    # Half up, not half even: 2.5 -> 3 and 3.5 -> 4 alike (half even would give 2 and 4).
    assert recalculate_totals([item(1, cents, "5")]).tax_cents == tax


def test_tax_is_rounded_once_per_invoice_not_per_line():
    # Three lines of 10.10 at 13 %: per line 1.313 -> 1.31 each (3.93); on the invoice 3.939 -> 3.94.
    totals = recalculate_totals([item(1, 1_010, "13") for _ in range(3)])
    assert totals.tax_cents == 394 and totals.total_cents == 3_030 + 394
    # Three lines of 0.10 at 5 %: per line 0.5 -> 1 cent each (3); on the invoice 1.5 -> 2.
    assert recalculate_totals([item(1, 10, "5") for _ in range(3)]).tax_cents == 2


def test_each_rate_is_rounded_on_its_own_taxable_amount():
    # 5 % of 10.10 = 0.505 -> 0.51; 9.975 % of 10.10 = 1.00748 -> 1.01; together 1.52.
    # A combined rate on the whole (14.975 % of 10.10 = 1.512) would say 1.51.
    totals = recalculate_totals([item(1, 1_010, "5"), item(1, 1_010, "9.975")])
    assert totals.tax_cents == 51 + 101
    assert totals.taxable_subtotal_cents == 2_020


def test_one_rate_written_two_ways_is_one_group():
    assert recalculate_totals([item(1, 10, "5"), item(1, 20, "5.00")]).tax_cents == 2  # 1.5 -> 2


def test_quebec_rate_needs_three_places():
    assert recalculate_totals([item(1, 10_000, "9.975")]).tax_cents == 998  # 997.5 -> 998


def test_line_amounts_round_half_even_as_booking_does():
    # Booking prices 1.5 bathrooms with round(): 2251.5 -> 2252, 2254.5 -> 2254.
    assert item("1.5", 1_501).amount_cents == round(1.5 * 1_501) == 2_252
    assert item("1.5", 1_503).amount_cents == round(1.5 * 1_503) == 2_254
    assert item("1.25", 4_000).amount_cents == 5_000
    assert recalculate_totals([item("1.5", 1_503, "0")]).subtotal_cents == 2_254


def test_zero_rate_invoice_has_nothing_taxable():
    totals = recalculate_totals([item(1, 9_000, "0"), item(3, 500, 0)])
    assert totals == Totals(10_500, 0, 0, 10_500, Decimal("0.0000"))


def test_no_items_is_all_zeros():
    assert recalculate_totals([]) == Totals(0, 0, 0, 0, Decimal("0.0000"))


def test_a_free_taxed_line_counts_as_taxable_with_nothing_to_tax():
    totals = recalculate_totals([item(1, 0, "13"), item(1, 1_000, "0")])
    assert (totals.taxable_subtotal_cents, totals.tax_cents, totals.tax_rate_basis) == (
        0,
        0,
        Decimal("0.0000"),
    )


def test_tax_rate_basis_is_the_rate_the_stored_amounts_imply():
    # 13 % of 10.01 = 1.3013 -> 1.30; 130 / 1001 = 12.98701... %
    assert recalculate_totals([item(1, 1_001, "13")]).tax_rate_basis == Decimal("12.9870")
    # 5 % of 100 and 13 % of 100 on 200 taxable: 18 / 200 = 9 %
    mixed = recalculate_totals([item(1, 10_000, "5"), item(1, 10_000, "13"), item(1, 5_000, "0")])
    assert mixed.tax_cents == 1_800 and mixed.tax_rate_basis == Decimal("9.0000")
    assert recalculate_totals([item(1, 10_000, "100")]).tax_rate_basis == Decimal("100.0000")


@pytest.mark.parametrize(
    "quantity", [0, -1, "0", "-0.5", "abc", "NaN", "Infinity", 1.5, "1.234", 10_001, True]
)
def test_quantity_must_be_positive_bounded_and_decimal(quantity):
    with pytest.raises(InvalidArgument) as raised:
        item(quantity=quantity)
    assert fields(raised) == ["item.quantity"]


@pytest.mark.parametrize("cents", [-1, 10_000_001, True, 1.5, "100"])
def test_unit_price_is_whole_cents_from_zero(cents):
    with pytest.raises(InvalidArgument) as raised:
        item(cents=cents)
    assert fields(raised) == ["item.unit_price_cents"]


@pytest.mark.parametrize("rate", ["-1", "-0.01", "100.01", "101", "abc", "NaN", 0.13, "9.97501", None])
def test_tax_rate_is_a_percentage_from_zero_to_a_hundred(rate):
    with pytest.raises(InvalidArgument) as raised:
        item(rate=rate)
    assert fields(raised) == ["item.tax_rate"]


@pytest.mark.parametrize("rate", ["0", "100", "9.975", 5, Decimal("13.0000")])
def test_rates_at_and_inside_the_bounds_are_accepted(rate):
    assert item(rate=rate).tax_rate == Decimal(str(rate))


@pytest.mark.parametrize("description", ["", "   ", "x" * 501])
def test_description_is_required_and_bounded(description):
    with pytest.raises(InvalidArgument) as raised:
        item(description=description)
    assert fields(raised) == ["item.description"]


def test_every_bad_field_of_a_line_is_named_at_once():
    with pytest.raises(InvalidArgument) as raised:
        line_item("", 0, -1, "101")
    assert fields(raised) == ["item.description", "item.quantity", "item.unit_price_cents", "item.tax_rate"]
    assert raised.value.grpc_code.name == "INVALID_ARGUMENT"  # the gateway's 422


def test_recalculate_refuses_an_unchecked_line_by_its_index():
    good = item()
    bad = LineItem("Cleaning", Decimal(0), 100, Decimal(-5))  # built without line_item
    with pytest.raises(InvalidArgument) as raised:
        recalculate_totals([good, bad])
    assert fields(raised) == ["items.1.quantity", "items.1.tax_rate"]


# Property: for any lines, total = subtotal + tax, and the tax is within half a cent per line of the
# exact tax on the line amounts (the rule's bound is half a cent per rate, which is never more).
_lines = st.lists(
    st.builds(
        lambda q, cents, rate: line_item("Line", q, cents, rate),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100), places=2),
        st.integers(min_value=0, max_value=1_000_000),
        st.sampled_from(["0", "5", "9.975", "13", "15", "14.975", "100"]).map(Decimal),
    ),
    max_size=12,
)


# Derandomised and without an example database, as the gateway's fuzz tests: the same run every time.
@settings(max_examples=500, derandomize=True, database=None)
@given(_lines)
def test_totals_add_up_and_tax_stays_within_half_a_cent_per_line(lines):
    totals = recalculate_totals(lines)
    assert totals.total_cents == totals.subtotal_cents + totals.tax_cents
    assert totals.subtotal_cents == sum(line.amount_cents for line in lines)
    exact = sum(Decimal(line.amount_cents) * line.tax_rate / 100 for line in lines)
    assert abs(Decimal(totals.tax_cents) - exact) <= Decimal("0.5") * max(len(lines), 1)
    rates = {line.tax_rate for line in lines if line.tax_rate > 0}
    assert abs(Decimal(totals.tax_cents) - exact) <= Decimal("0.5") * len(rates)
