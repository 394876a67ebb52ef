"""The estimator's arithmetic, alone: integer cents, minimum charge, input bounds."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from libs.common.errors import InvalidArgument
from services.booking import pricing


def config(**overrides):
    values = {
        "id": uuid.uuid4(),
        "version": 3,
        "currency": "CAD",
        "rules": pricing.DEFAULT_RULES,
        "min_total_cents": pricing.DEFAULT_MIN_TOTAL_CENTS,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_deep_two_beds_one_and_a_half_baths():
    result = pricing.compute(config(), 2, 1.5, "deep")
    rule = pricing.DEFAULT_RULES["deep"]
    expected = rule["base_cents"] + 2 * rule["per_bed_cents"] + round(1.5 * rule["per_bath_cents"])
    assert result.total_before_tax_cents == expected
    assert [line.code for line in result.lines] == ["base", "bedrooms", "bathrooms"]
    assert sum(line.amount_cents for line in result.lines) == expected
    assert result.version == 3 and result.currency == "CAD"
    assert result.estimated_minutes == rule["minutes_base"] + 2 * rule["minutes_per_bed"] + 60


def test_minimum_charge_line_tops_up_small_jobs():
    result = pricing.compute(config(min_total_cents=50_000), 0, 0, "standard")
    assert result.total_before_tax_cents == 50_000
    assert result.lines[-1].code == "minimum"


@pytest.mark.parametrize(
    ("beds", "baths", "kind", "field"),
    [
        (-1, 1, "standard", "beds"),
        (21, 1, "standard", "baths_ok"),
        (2, 1.25, "deep", "baths"),
        (2, -0.5, "deep", "baths"),
        (2, float("nan"), "deep", "baths"),
        (2, 1, "palace", "cleaning_type"),
    ],
)
def test_absurd_inputs_are_refused_with_the_field_named(beds, baths, kind, field):
    with pytest.raises(InvalidArgument) as caught:
        pricing.compute(config(), beds, baths, kind)
    fields = {v.field for v in caught.value.violations}
    assert (field if field != "baths_ok" else "beds") in fields
