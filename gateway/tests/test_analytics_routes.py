"""The funnel (`GET /v1/admin/analytics/funnel`) and the business metrics (`GET /v1/admin/metrics`,
seed 004's CSV line) through the gateway in front of the real services: counts of one org's leads,
bookings, completed jobs and payments with their conversion rates; the CSV's header and rows and the
same as JSON; the period's rules; analyst roles and Basic Auth's admin pair; another org's figures
never counted; and a service that cannot answer failing the metrics with a 503 naming it."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tools.devstack import free_port
from tools.testkit import assert_problem, basic, owner, staff

STRONG = "Strong-metrics-pass-" + "5a6b7c8d"
TODAY = datetime.now(UTC).date()
# Wide enough for every count, whether a service dates it by creation or by the booking's start.
PERIOD = {"from": (TODAY - timedelta(days=1)).isoformat(), "to": (TODAY + timedelta(days=7)).isoformat()}
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


async def lead(http: httpx.AsyncClient, url: str, org: Any) -> str:
    created = await http.post(
        f"{url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": "Funnel Lead",
            "phone": "780-555-0101",
            "email": f"funnel-{uuid.uuid4().hex[:8]}@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 2, "baths": 1, "cleaning_type": "standard"},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["lead_id"])


async def funnel_of(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, str]:
    """Two leads; one becomes a booking, completed, invoiced and paid by hand. The owner's headers.
    (The invoice names no booking: completing it has billing draft the booking's own invoice, and a
    second one for the same booking is a 409.)"""
    headers = await owner(http, url, org)
    first = await lead(http, url, org)
    await lead(http, url, org)
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    booked = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={"lead_id": first, "starts_at": starts.isoformat(), "duration_minutes": 120},
    )
    assert booked.status_code == 201, booked.text
    booking_id = booked.json()["id"]
    for action in ("confirm", "start", "complete"):
        done = await http.post(f"{url}/v1/admin/bookings/{booking_id}/{action}", headers=headers)
        assert done.status_code == 200, done.text
    invoice = await http.post(
        f"{url}/v1/admin/invoices",
        headers=headers,
        json={
            "client_name": "Funnel Lead",
            "client_email": f"funnel-{uuid.uuid4().hex[:8]}@example.com",
            "items": [{"description": "Clean", "quantity": "1", "unit_price_cents": 10000, "tax_rate": "5"}],
        },
    )
    assert invoice.status_code == 201, invoice.text
    invoice_id = invoice.json()["id"]
    assert (
        await http.post(f"{url}/v1/admin/invoices/{invoice_id}/issue", headers=headers)
    ).status_code == 200
    paid = await http.post(
        f"{url}/v1/admin/invoices/{invoice_id}/payments",
        headers=headers,
        json={"amount_cents": 10500, "method": "cash"},
    )
    assert paid.status_code == 201, paid.text
    return headers


async def test_the_funnel_counts_one_orgs_steps_and_rates(gateway, http, make_org):
    url = gateway.url
    org, other = await make_org(), await make_org()
    headers = await funnel_of(http, url, org)
    await funnel_of(http, url, other)  # the other org's figures must not show

    response = await http.get(f"{url}/v1/admin/analytics/funnel", headers=headers, params=PERIOD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == (PERIOD["from"], PERIOD["to"])
    assert (body["leads"], body["bookings"], body["completed_jobs"], body["paid_payments"]) == (2, 1, 1, 1), (
        body
    )
    assert body["conversion"] == {
        "lead_to_booking": 0.5,
        "booking_to_completed": 1.0,
        "completed_to_paid": 1.0,
        "lead_to_paid": 0.5,
    }
    # No names, emails or ids: aggregates only.
    assert "Funnel Lead" not in response.text and "@" not in response.text

    # The default period is the last 30 days, as ISO instants; it holds today's figures.
    default = await http.get(f"{url}/v1/admin/analytics/funnel", headers=headers)
    assert default.status_code == 200, default.text
    start = datetime.fromisoformat(default.json()["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(default.json()["to"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=30)
    assert default.json()["leads"] == 2


async def test_an_empty_period_has_null_rates(gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    response = await http.get(
        f"{gateway.url}/v1/admin/analytics/funnel",
        headers=headers,
        params={"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["leads"], body["bookings"], body["completed_jobs"], body["paid_payments"]) == (0, 0, 0, 0)
    assert set(body["conversion"].values()) == {None}


async def test_bad_periods_are_422_naming_the_field(gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    cases = [
        ({"from": "2026-02-01", "to": "2026-01-01"}, "to"),
        ({"from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:00:00Z"}, "to"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),  # more than 366 days
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"to": "9999-12-31"}, "to"),  # the day after it is past what a timestamp holds
        ({"from": "0001-01-01T00:00:00+05:00", "to": "0001-01-02"}, "from"),
        ({"to": "0001-01-05"}, "to"),  # the default from, 30 days before, is before year 1
    ]
    for path in ("/v1/admin/analytics/funnel", "/v1/admin/metrics"):
        for params, field in cases:
            response = await http.get(f"{gateway.url}{path}", headers=headers, params=params)
            problem = assert_problem(response, 422)
            assert field in {e["field"].split(".")[-1] for e in problem["errors"]}, (path, params, problem)
    problem = assert_problem(
        await http.get(f"{gateway.url}/v1/admin/metrics", headers=headers, params={"format": "xml"}), 422
    )
    assert "format" in problem["errors"][0]["field"]


async def test_the_metrics_csv_and_json(gateway, http, make_org):
    url = gateway.url
    org, other = await make_org(), await make_org()
    headers = await funnel_of(http, url, org)
    await funnel_of(http, url, other)

    response = await http.get(f"{url}/v1/admin/metrics", headers=headers, params={"format": "csv", **PERIOD})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines()[0] == "metric,from,to,value"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows, response.text
    for row in rows:
        assert (row["from"], row["to"]) == (PERIOD["from"], PERIOD["to"]), row
        assert NUMBER.match(row["value"]) and not row["value"].endswith(".0"), row
        assert re.match(r"^[a-z0-9_]+$", row["metric"]), row
        if "cents" in row["metric"]:
            assert re.search(r"_[a-z]{3}$", row["metric"]), f"money without its currency: {row}"
    values = {row["metric"]: row["value"] for row in rows}
    assert len(values) == len(rows), "one row per metric"
    assert values["leads"] == "2", values
    assert any(name.endswith("_cad") for name in values), values

    # The same figures as JSON; csv is the default format.
    as_json = await http.get(f"{url}/v1/admin/metrics", headers=headers, params={"format": "json", **PERIOD})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert (body["from"], body["to"]) == (PERIOD["from"], PERIOD["to"])
    assert {m["metric"]: str(m["value"]) for m in body["metrics"]} == values
    assert all(isinstance(m["value"], int | float) for m in body["metrics"])
    default = await http.get(f"{url}/v1/admin/metrics", headers=headers, params=PERIOD)
    assert default.headers["content-type"].startswith("text/csv") and default.text == response.text


async def test_analyst_roles_and_the_seed_004_basic_auth_line(gateways, gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    for role, expected in (("FINANCE", 200), ("ADMIN", 200), ("DISPATCHER", 403), ("VIEWER", 403)):
        session = await staff(http, url, headers, role)
        for path in ("/v1/admin/analytics/funnel", "/v1/admin/metrics"):
            response = await http.get(f"{url}{path}", headers=session)
            if expected == 200:
                assert response.status_code == 200, f"{role} {path}: {response.text}"
            else:
                assert_problem(response, 403, "forbidden_role")
    for path in ("/v1/admin/analytics/funnel", "/v1/admin/metrics"):
        assert_problem(await http.get(f"{url}{path}"), 401)

    # Seed 004: curl -u "$ADMIN_BASIC_USERNAME:$ADMIN_BASIC_PASSWORD" "$API_BASE/v1/admin/metrics?format=csv"
    gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin", ADMIN_BASIC_PASSWORD=STRONG, LEGACY_BASIC_AUTH_ENABLED="true"
    )
    response = await http.get(
        f"{gw.url}/v1/admin/metrics?format=csv",
        headers={**basic("admin", STRONG), "X-Test-Org": org.org_id},
    )
    assert response.status_code == 200, response.text
    assert response.text.splitlines()[0] == "metric,from,to,value"


async def test_a_service_that_cannot_answer_fails_the_metrics_naming_it(gateways, gateway, http, make_org):
    org = await make_org()
    gw = gateways.get(NOTIFY_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    headers = await owner(http, gw.url, org)
    problem = assert_problem(await http.get(f"{gw.url}/v1/admin/metrics", headers=headers), 503)
    assert "notify" in problem["detail"], problem
    # The funnel needs booking and billing only: notify being away does not touch it.
    assert (await http.get(f"{gw.url}/v1/admin/analytics/funnel", headers=headers)).status_code == 200
    gw = gateways.get(BILLING_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    headers = await owner(http, gw.url, org)
    problem = assert_problem(await http.get(f"{gw.url}/v1/admin/analytics/funnel", headers=headers), 503)
    assert "billing" in problem["detail"], problem
