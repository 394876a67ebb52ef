"""The rules of the finance books and tax reports alone, without a database: the period (required,
ordered, at most 366 days, real dates in range), its UTC bounds in the org's time zone, the checks an
expense and an instalment go through, and CSV cells that cannot run as formulas."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.common.errors import InvalidArgument
from services.billing.csv_cells import csv_text
from services.billing.expenses import FIRST_DAY, LAST_DAY, expense_values, instalment_values
from services.billing.tax_reports import MAX_DAYS, export_filename, parse_period


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_a_quarter_in_toronto_runs_from_local_midnight_to_local_midnight():
    q1 = parse_period("2026-01-01", "2026-03-31", "America/Toronto")
    assert q1.utc_start == datetime(2026, 1, 1, 5, tzinfo=UTC)  # EST, -05:00
    assert q1.utc_end == datetime(2026, 4, 1, 4, tzinfo=UTC)  # EDT by then, -04:00
    # 23:30 on 31 March in Toronto is 03:30 UTC on 1 April: inside Q1.
    assert q1.utc_start <= datetime(2026, 4, 1, 3, 30, tzinfo=UTC) < q1.utc_end
    assert export_filename(q1) == "gst_export_2026-01-01_2026-03-31.zip"
    # A zone this machine does not know, or none: UTC, as the rest of billing does.
    assert parse_period("2026-01-01", "2026-01-01", "Mars/Olympus").utc_start == datetime(
        2026, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("", "2026-01-01", "from"),
        ("2026-01-01", "", "to"),
        ("2026-02-30", "2026-03-31", "from"),
        ("20260101", "2026-03-31", "from"),
        ("2026-W01-1", "2026-03-31", "from"),
        ("2026-03-31", "2026-01-01", "to"),
        ("2025-01-01", "2026-01-02", "to"),  # 367 days
        ("0001-01-01", "0001-01-02", "from"),
        ("9999-12-30", "9999-12-31", "to"),
    ],
)
def test_a_bad_period_is_refused_naming_the_field(start: str, end: str, field: str):
    with pytest.raises(InvalidArgument) as refused:
        parse_period(start, end, "UTC")
    assert field in fields(refused)


def test_the_longest_period_is_366_days():
    assert parse_period("2024-01-01", "2024-12-31", "UTC").end == date(2024, 12, 31)
    with pytest.raises(InvalidArgument) as refused:
        parse_period("2024-01-01", "2025-01-01", "UTC")
    assert f"at most {MAX_DAYS} days" in str(refused.value)


@given(st.dates(min_value=FIRST_DAY, max_value=LAST_DAY), st.integers(min_value=0, max_value=MAX_DAYS - 1))
def test_every_allowed_period_has_bounds_in_any_zone(start: date, days: int):
    end = date.fromordinal(min(start.toordinal() + days, LAST_DAY.toordinal()))
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "America/Toronto"):
        period = parse_period(start.isoformat(), end.isoformat(), zone)
        assert period.utc_start < period.utc_end


EXPENSE: dict[str, Any] = {
    "spent_on": "2026-02-10",
    "category": "supplies",
    "vendor": "Mop Mart",
    "amount_cents": 11300,
    "gst_cents": 1300,
    "currency": "cad",
}


def test_an_expense_is_checked_whole():
    assert expense_values(EXPENSE)["currency"] == "CAD"
    cases = {
        "amount_cents": {"amount_cents": 0},
        "gst_cents": {"gst_cents": 11301},
        "category": {"category": "   "},
        "vendor": {"vendor": "x" * 201},
        "description": {"description": "line\nbreak"},
        "spent_on": {"spent_on": "2026-02-29"},
        "currency": {"currency": "JPY"},
    }
    for field, change in cases.items():
        with pytest.raises(InvalidArgument) as refused:
            expense_values({**EXPENSE, **change})
        assert fields(refused) == {field}, (field, refused.value)


def test_an_instalment_period_is_in_order_and_paid_on_is_optional():
    base = {"period_start": "2026-01-01", "period_end": "2026-03-31", "amount_cents": 100, "currency": "CAD"}
    assert instalment_values(base)["paid_on"] is None
    assert instalment_values({**base, "paid_on": "2026-04-30"})["paid_on"] == date(2026, 4, 30)
    with pytest.raises(InvalidArgument) as refused:
        instalment_values({**base, "period_end": "2025-12-31"})
    assert fields(refused) == {"period_end"}


def test_a_vendor_named_as_a_formula_is_written_as_text():
    text = csv_text([("vendor", "amount_cents"), ("=cmd|' /C calc'!A0", -500), ("+1", 0), ("@SUM(A1)", 1)])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1:] == [["'=cmd|' /C calc'!A0", "-500"], ["'+1", "0"], ["'@SUM(A1)", "1"]]
