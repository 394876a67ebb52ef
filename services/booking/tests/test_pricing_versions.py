"""Pricing versions at the gateway, in front of the real booking process: a new version becomes
active at once, estimates use it, earlier leads keep their snapshot; roles, validation, other orgs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from libs.common.errors import InvalidArgument
from services.booking import pricing
from services.booking.tests.helpers import applied_profile
from tools import testkit
from tools.testkit import assert_clean, assert_problem

RULE = {
    "base_cents": 10_000,
    "per_bed_cents": 1_000,
    "per_bath_cents": 500,
    "minutes_base": 60,
    "minutes_per_bed": 20,
    "minutes_per_bath": 10,
}
LEAD = {
    "name": "Version Lead",
    "phone": "780-555-0000",
    "email": "lead@example.com",
    "postal_code": "T5J0N3",
    "structured_inputs": {"beds": 2, "baths": 1, "cleaning_type": "standard"},
}


async def public_key(stack: Any, org_id: str) -> str:
    key, _, _ = await applied_profile(stack, org_id)
    return key


async def configs(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await http.get(f"{url}/v1/admin/pricing-configs", headers=headers)
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response.json()["configs"]  # type: ignore[no-any-return]


async def test_new_version_prices_new_estimates_and_leads_keep_their_snapshot(gateway, http, stack, make_org):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    (first,) = await configs(http, url, owner)
    assert first["version"] == 1 and first["active"] is True and first["used"] is False
    assert first["rules"] == pricing.DEFAULT_RULES and first["currency"] == "CAD"

    key = {"X-Org-Key": await public_key(stack, org.org_id)}
    old_quote = (
        await http.post(
            f"{url}/v1/estimate", headers=key, json={"beds": 2, "baths": 1, "cleaning_type": "standard"}
        )
    ).json()
    assert old_quote["pricing_config_id"] == first["id"]
    lead = await http.post(f"{url}/v1/leads", headers=key, json=LEAD)
    assert lead.status_code == 201, lead.text
    old_snapshot = lead.json()["estimate"]
    assert old_snapshot["pricing_config_id"] == first["id"]

    created = await http.post(
        f"{url}/v1/admin/pricing-configs",
        headers=owner,
        json={"rules": {"standard": RULE, "eco_clean": {**RULE, "base_cents": 7_000}}, "min_total_cents": 0},
    )
    assert_clean(created)
    assert created.status_code == 201, created.text
    second = created.json()
    assert second["version"] == 2 and second["active"] is True and second["used"] is False
    assert second["rules"] == {"eco_clean": {**RULE, "base_cents": 7_000}, "standard": RULE}
    assert second["currency"] == "CAD" and second["min_total_cents"] == 0

    new_quote = await http.post(
        f"{url}/v1/estimate", headers=key, json={"beds": 2, "baths": 1, "cleaning_type": "standard"}
    )
    assert new_quote.status_code == 200, new_quote.text
    assert new_quote.json()["pricing_config_id"] == second["id"]
    assert new_quote.json()["pricing_config_version"] == 2
    assert new_quote.json()["total_before_tax_cents"] == 10_000 + 2 * 1_000 + 500
    assert new_quote.json()["estimated_minutes"] == 60 + 40 + 10
    assert new_quote.json()["total_before_tax_cents"] != old_quote["total_before_tax_cents"]
    # A cleaning type the new version dropped is no longer offered.
    dropped = await http.post(
        f"{url}/v1/estimate", headers=key, json={"beds": 2, "baths": 1, "cleaning_type": "deep"}
    )
    assert_problem(dropped, 422)

    lead_now = (await http.get(f"{url}/v1/admin/leads/{lead.json()['lead_id']}", headers=owner)).json()
    assert lead_now["estimate"] == old_snapshot

    # Used versions step down too (the trigger allows `active` to change), newest first.
    third = await http.post(
        f"{url}/v1/admin/pricing-configs",
        headers=owner,
        json={"rules": {"standard": RULE}, "min_total_cents": 20_000, "currency": "USD"},
    )
    assert third.status_code == 201, third.text
    listed = await configs(http, url, owner)
    assert [c["version"] for c in listed] == [3, 2, 1]
    assert [c["active"] for c in listed] == [True, False, False]
    assert [c["used"] for c in listed] == [False, True, True]
    assert listed[0]["currency"] == "USD" and listed[2]["rules"] == pricing.DEFAULT_RULES


async def test_roles_validation_and_other_orgs(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    viewer = await testkit.staff(http, url, owner, "VIEWER")
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    admin = await testkit.staff(http, url, owner, "ADMIN")
    body = {"rules": {"standard": RULE}, "min_total_cents": 5_000}
    for headers in (viewer, dispatcher):
        assert_problem(await http.post(f"{url}/v1/admin/pricing-configs", headers=headers, json=body), 403)
    assert [c["version"] for c in await configs(http, url, viewer)] == [1]
    made = await http.post(f"{url}/v1/admin/pricing-configs", headers=admin, json=body)
    assert made.status_code == 201 and made.json()["version"] == 2

    for bad, field in (
        ({"rules": {}}, "rules"),
        ({}, "rules"),
        ({"rules": {"Deep": RULE}}, "rules"),
        ({"rules": {"x" * 21: RULE}}, "rules"),
        ({"rules": {"standard": {**RULE, "base_cents": -1}}}, "base_cents"),
        ({"rules": {"standard": {**RULE, "per_bed_cents": 10_000_001}}}, "per_bed_cents"),
        ({"rules": {"standard": {**RULE, "minutes_base": 1_441}}}, "minutes_base"),
        ({"rules": {"standard": {**RULE, "per_bath_cents": 1.5}}}, "per_bath_cents"),
        ({"rules": {"standard": {**RULE, "per_bath_cents": "500"}}}, "per_bath_cents"),
        ({"rules": {"standard": {k: v for k, v in RULE.items() if k != "minutes_per_bath"}}}, "minutes"),
        ({"rules": {"standard": {**RULE, "surcharge": 1}}}, "surcharge"),
        ({"rules": {"standard": RULE}, "currency": "cad"}, "currency"),
        ({"rules": {"standard": RULE}, "currency": "CADD"}, "currency"),
        ({"rules": {"standard": RULE}, "min_total_cents": -5}, "min_total_cents"),
    ):
        problem = assert_problem(
            await http.post(f"{url}/v1/admin/pricing-configs", headers=owner, json=bad), 422
        )
        assert any(field in e["field"] for e in problem["errors"]), (bad, problem)
    assert [c["version"] for c in await configs(http, url, owner)] == [2, 1]

    intruder = await testkit.owner(http, url, await make_org())
    theirs = await configs(http, url, intruder)
    assert [c["version"] for c in theirs] == [1]
    ours = {c["id"] for c in await configs(http, url, owner)}
    assert not ours & {c["id"] for c in theirs}
    await http.post(f"{url}/v1/admin/pricing-configs", headers=intruder, json=body)
    assert [c["version"] for c in await configs(http, url, owner)] == [2, 1]
    assert [c["version"] for c in await configs(http, url, intruder)] == [2, 1]


async def test_concurrent_versions_get_distinct_numbers(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    await configs(http, url, owner)
    responses = await asyncio.gather(
        *(
            http.post(f"{url}/v1/admin/pricing-configs", headers=owner, json={"rules": {"standard": RULE}})
            for _ in range(4)
        )
    )
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    listed = await configs(http, url, owner)
    assert [c["version"] for c in listed] == [5, 4, 3, 2, 1]
    assert sum(c["active"] for c in listed) == 1 and listed[0]["active"]


@pytest.mark.parametrize(
    ("rules", "min_total", "currency", "field"),
    [
        ([], 0, "", "rules"),
        ([("Deep", RULE)], 0, "", "rules.Deep"),
        ([("deep", RULE), ("deep", RULE)], 0, "", "rules.deep"),
        ([("deep", {**RULE, "minutes_base": 2_000})], 0, "", "rules.deep.minutes_base"),
        ([("deep", {**RULE, "base_cents": -1})], 0, "", "rules.deep.base_cents"),
        ([("deep", RULE)], 10_000_001, "", "min_total_cents"),
        ([("deep", RULE)], 0, "cad", "currency"),
    ],
)
def test_the_service_checks_the_rules_itself(rules, min_total, currency, field):
    with pytest.raises(InvalidArgument) as caught:
        pricing.validate_config(rules, min_total, currency)
    assert field in {v.field for v in caught.value.violations}


def test_valid_rules_are_stored_as_given():
    checked = pricing.validate_config([("move_out", RULE)], 0, "EUR")
    assert checked == {"move_out": RULE}
