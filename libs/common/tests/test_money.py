from __future__ import annotations

import pytest

from libs.common.money import format_cents


@pytest.mark.parametrize(
    ("cents", "currency", "shown"),
    [
        (0, "CAD", "CAD 0.00"),
        (5, "cad", "CAD 0.05"),
        (100, "USD", "USD 1.00"),
        (13_500, "CAD", "CAD 135.00"),
        (15_255, "CAD", "CAD 152.55"),
        (123_456_789, "CAD", "CAD 1,234,567.89"),
        (123_456_789_012, "CAD", "CAD 1,234,567,890.12"),
        (-250, "CAD", "CAD -2.50"),
        (123_456, "", "1,234.56"),
    ],
)
def test_amounts_are_shown_from_integer_cents(cents: int, currency: str, shown: str) -> None:
    assert format_cents(cents, currency) == shown
