"""The currencies billing accepts: 2-minor-unit ISO 4217 codes, upper case."""

from __future__ import annotations

import pytest

from libs.common.errors import InvalidArgument
from services.billing.currency import MINOR_UNITS, normalise_currency


@pytest.mark.parametrize(
    ("given", "stored"), [("CAD", "CAD"), ("usd", "USD"), (" eur ", "EUR"), ("Gbp", "GBP"), ("AUD", "AUD")]
)
def test_accepted_codes_are_normalised_to_upper_case(given, stored):
    assert normalise_currency(given) == stored


def test_every_accepted_currency_has_two_minor_units():
    assert set(MINOR_UNITS) >= {"CAD", "USD", "EUR", "GBP", "AUD"}
    assert set(MINOR_UNITS.values()) == {2}


@pytest.mark.parametrize("code", ["JPY", "KWD", "XYZ", "CA", "CADD", "", None])
def test_other_codes_are_refused_naming_the_currency(code):
    with pytest.raises(InvalidArgument) as raised:
        normalise_currency(code)
    assert [v.field for v in raised.value.violations] == ["currency"]
    assert "AUD, CAD, EUR, GBP, USD" in raised.value.detail
