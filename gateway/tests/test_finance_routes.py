"""Finance books and tax reports through the gateway, in front of the real services (seed 003 "Finance
tax exports", seed 002 "Invoice tax snapshots and reporting"): expenses and GST instalments CRUD with
their refusals and audit, the GST and P&L reports from the stored invoice snapshots in the org's time
zone, the GST export ZIP opened and parsed, the roles, and the range rules."""

from __future__ import annotations

import base64
import csv
import io
import uuid
import zipfile
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from gateway.tests.test_billing_bad_input import STRONG
from gateway.tests.test_billing_routes import issued_invoice
from tools.testkit import assert_problem, eventually, owner, sql, staff

EXPENSES = "/v1/admin/finance/expenses"
INSTALMENTS = "/v1/admin/finance/tax-instalments"
EXPORT = "/v1/admin/finance/taxes/export"
GST = "/v1/admin/finance/reports/gst"
PNL = "/v1/admin/finance/reports/pnl"
Q1 = {"from": "2026-01-01", "to": "2026-03-31"}
TORONTO = ZoneInfo("America/Toronto")


def fields(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors") or []}


async def created(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def expense(**extra: Any) -> dict[str, Any]:
    return {
        "spent_on": "2026-02-10",
        "category": "supplies",
        "vendor": "Mop Mart",
        "amount_cents": 11300,
        **extra,
    }


async def test_expenses_and_instalments_crud_with_refusals_and_audit(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)

    made = await created(http, url + EXPENSES, headers, expense(gst_cents=1300, description="mops"))
    assert (made["currency"], made["amount_cents"], made["gst_cents"], made["net_cents"]) == (
        "CAD",
        11300,
        1300,
        10000,
    )
    other = await created(
        http, url + EXPENSES, headers, expense(spent_on="2026-05-01", category="fuel", currency="usd")
    )
    assert (other["currency"], other["gst_cents"]) == ("USD", 0)
    one = await http.get(f"{url}{EXPENSES}/{made['id']}", headers=headers)
    assert one.status_code == 200 and one.json() == made, one.text

    listed = await http.get(url + EXPENSES, headers=headers)
    assert [e["id"] for e in listed.json()["items"]] == [other["id"], made["id"]] and listed.json()[
        "total"
    ] == 2
    in_q1 = await http.get(url + EXPENSES, headers=headers, params=Q1)
    assert [e["id"] for e in in_q1.json()["items"]] == [made["id"]]
    fuel = await http.get(url + EXPENSES, headers=headers, params={"category": "fuel", "limit": 1})
    assert [e["id"] for e in fuel.json()["items"]] == [other["id"]]
    backwards = await http.get(
        url + EXPENSES, headers=headers, params={"from": "2026-03-01", "to": "2026-02-01"}
    )
    assert "to" in fields(assert_problem(backwards, 422))

    refusals = {
        "amount_cents": expense(amount_cents=0),
        "gst_cents": expense(gst_cents=11301),
        "category": expense(category=""),
        "spent_on": expense(spent_on="2026-02-30"),
        "currency": expense(currency="XYZ"),
    }
    for field, body in refusals.items():
        problem = assert_problem(await http.post(url + EXPENSES, headers=headers, json=body), 422)
        assert any(field in f for f in fields(problem)), (field, problem)
    assert_problem(await http.post(url + EXPENSES, headers=headers, json=expense(category="c" * 65)), 422)
    assert_problem(await http.post(url + EXPENSES, headers=headers, json={**expense(), "surprise": 1}), 422)
    assert (
        await sql(stack.admin_url, "SELECT count(*) FROM billing.expenses WHERE org_id = %s", (org.org_id,))
    ) == [(2,)], "no refused expense was written"

    # PATCH: the record as it would be after the change is checked whole (GST within the amount).
    too_much_gst = await http.patch(
        f"{url}{EXPENSES}/{made['id']}", headers=headers, json={"amount_cents": 1000}
    )
    assert "gst_cents" in fields(assert_problem(too_much_gst, 422))
    edited = await http.patch(
        f"{url}{EXPENSES}/{made['id']}", headers=headers, json={"amount_cents": 22600, "gst_cents": 2600}
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["amount_cents"], edited.json()["vendor"], edited.json()["spent_on"]) == (
        22600,
        "Mop Mart",
        "2026-02-10",
    )
    nothing = await http.patch(f"{url}{EXPENSES}/{made['id']}", headers=headers, json={"vendor": None})
    assert "body" in fields(assert_problem(nothing, 422))
    assert_problem(await http.get(f"{url}{EXPENSES}/not-an-id", headers=headers), 422)
    assert_problem(
        await http.get(f"{url}{EXPENSES}/{uuid.uuid4()}", headers=headers), 404, "expense_not_found"
    )
    gone = await http.delete(f"{url}{EXPENSES}/{other['id']}", headers=headers)
    assert gone.status_code == 204, gone.text
    assert_problem(await http.get(f"{url}{EXPENSES}/{other['id']}", headers=headers), 404)
    assert_problem(await http.delete(f"{url}{EXPENSES}/{other['id']}", headers=headers), 404)

    # Instalments: planned, then paid, then planned again.
    planned = await created(
        http,
        url + INSTALMENTS,
        headers,
        {"period_start": "2026-01-01", "period_end": "2026-03-31", "amount_cents": 50000},
    )
    assert (planned["paid_on"], planned["currency"], planned["reference"]) == (None, "CAD", "")
    backwards = await http.post(
        url + INSTALMENTS,
        headers=headers,
        json={"period_start": "2026-04-01", "period_end": "2026-03-31", "amount_cents": 1},
    )
    assert "period_end" in fields(assert_problem(backwards, 422))
    for bad in ({"amount_cents": 0}, {"paid_on": "2026-13-01"}, {"reference": "r" * 201}):
        body = {"period_start": "2026-01-01", "period_end": "2026-03-31", "amount_cents": 1, **bad}
        assert_problem(await http.post(url + INSTALMENTS, headers=headers, json=body), 422)
    paid = await http.patch(
        f"{url}{INSTALMENTS}/{planned['id']}",
        headers=headers,
        json={"paid_on": "2026-04-15", "reference": "CRA-1"},
    )
    assert (paid.json()["paid_on"], paid.json()["reference"]) == ("2026-04-15", "CRA-1"), paid.text
    flipped = await http.patch(
        f"{url}{INSTALMENTS}/{planned['id']}", headers=headers, json={"period_start": "2026-05-01"}
    )
    assert "period_end" in fields(assert_problem(flipped, 422))
    only_paid = await http.get(url + INSTALMENTS, headers=headers, params={"status": "paid"})
    assert [i["id"] for i in only_paid.json()["items"]] == [planned["id"]]
    unpaid = await http.patch(f"{url}{INSTALMENTS}/{planned['id']}", headers=headers, json={"paid_on": None})
    assert unpaid.json()["paid_on"] is None and unpaid.json()["reference"] == "CRA-1", unpaid.text
    none_paid = await http.get(url + INSTALMENTS, headers=headers, params={"status": "paid"})
    assert none_paid.json() == {"total": 0, "items": []}
    in_q2 = await http.get(
        url + INSTALMENTS, headers=headers, params={"from": "2026-04-01", "to": "2026-06-30"}
    )
    assert in_q2.json()["items"] == []
    assert (await http.delete(f"{url}{INSTALMENTS}/{planned['id']}", headers=headers)).status_code == 204
    assert_problem(
        await http.get(f"{url}{INSTALMENTS}/{planned['id']}", headers=headers), 404, "instalment_not_found"
    )

    async def audited() -> dict[str, Any]:
        logs = await http.get(
            f"{url}/v1/admin/audit-logs", headers=headers, params={"action": "billing.UpdateExpense"}
        )
        assert logs.status_code == 200, logs.text
        [entry] = logs.json()
        return dict(entry)

    entry = await eventually(audited)
    assert (entry["before"]["amount_cents"], entry["after"]["amount_cents"]) == (11300, 22600), entry
    assert entry["resource_id"] == made["id"], entry

    async def deleted() -> list[Any]:
        logs = await http.get(
            f"{url}/v1/admin/audit-logs", headers=headers, params={"action": "billing.DeleteTaxInstalment"}
        )
        found = list(logs.json())
        assert found and found[0]["before"]["reference"] == "CRA-1", found
        return found

    await eventually(deleted)


async def at_local(stack: Any, invoice_id: str, local: datetime) -> None:
    """Behind billing's back: the invoice issued at this local time (a test cannot wait for 31 March)."""
    await sql(
        stack.admin_url, "UPDATE billing.invoices SET issued_at = %s WHERE id = %s", (local, invoice_id)
    )


async def test_gst_and_pnl_come_from_the_snapshots_in_the_orgs_time_zone(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org(time_zone="America/Toronto")
    headers = await owner(http, url, org)
    # 23:30 in Toronto on the quarter's last day is 03:30 UTC on 1 April: still Q1.
    late = await issued_invoice(http, url, headers)
    await at_local(stack, late["id"], datetime(2026, 3, 31, 23, 30, tzinfo=TORONTO))
    # 00:30 on 1 April in Toronto (04:30 UTC): Q2.
    april = await issued_invoice(http, url, headers)
    await at_local(stack, april["id"], datetime(2026, 4, 1, 0, 30, tzinfo=TORONTO))
    # 20:00 in Toronto on 31 December 2025 is 01:00 UTC on 1 January: not Q1.
    new_year = await issued_invoice(http, url, headers)
    await at_local(stack, new_year["id"], datetime(2025, 12, 31, 20, 0, tzinfo=TORONTO))
    voided = await issued_invoice(http, url, headers)
    assert (
        await http.post(f"{url}/v1/admin/invoices/{voided['id']}/void", headers=headers)
    ).status_code == 200
    await at_local(stack, voided["id"], datetime(2026, 2, 1, 12, tzinfo=TORONTO))
    dollars = await issued_invoice(http, url, headers, currency="USD")
    await at_local(stack, dollars["id"], datetime(2026, 1, 15, 9, tzinfo=TORONTO))
    paid = await http.post(
        f"{url}/v1/admin/invoices/{late['id']}/payments",
        headers=headers,
        json={
            "amount_cents": 5000,
            "method": "cheque",
            "reference": "=1+2",
            "received_at": "2026-03-31T23:45:00-04:00",
        },
    )
    assert paid.status_code == 201, paid.text

    await created(http, url + EXPENSES, headers, expense(gst_cents=1300, vendor="=cmd|' /C calc'!A0"))
    await created(http, url + EXPENSES, headers, expense(category="fuel", amount_cents=5250, gst_cents=250))
    await created(http, url + EXPENSES, headers, expense(spent_on="2026-04-01", gst_cents=999))  # Q2
    instalment = {"period_start": "2026-01-01", "period_end": "2026-03-31", "amount_cents": 300}
    await created(
        http, url + INSTALMENTS, headers, {**instalment, "paid_on": "2026-02-15", "reference": "@SUM(A1)"}
    )
    await created(http, url + INSTALMENTS, headers, instalment)  # planned: not counted
    await created(http, url + INSTALMENTS, headers, {**instalment, "paid_on": "2026-04-02"})  # paid in Q2

    # Today's settings and even the stored items change; the issued snapshots do not, nor the figures.
    changed = await http.put(f"{url}/v1/admin/finance/settings", headers=headers, json={"tax_rate": "5"})
    assert changed.status_code == 200, changed.text
    await sql(
        stack.admin_url, "UPDATE billing.invoice_items SET tax_rate = 0 WHERE org_id = %s", (org.org_id,)
    )  # behind billing's back: a report that recomputed from items would now say 0

    report = await http.get(url + GST, headers=headers, params=Q1)
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["from"], body["to"], body["time_zone"]) == ("2026-01-01", "2026-03-31", "America/Toronto")
    cad, usd = body["totals"]
    assert cad == {
        "currency": "CAD",
        "invoice_count": 1,
        "sales_subtotal_cents": 13500,
        "taxable_sales_cents": 13500,
        "gst_collected_cents": 1755,
        "expense_count": 2,
        "expenses_cents": 16550,
        "input_tax_credits_cents": 1550,
        "instalment_count": 1,
        "instalments_paid_cents": 300,
        "net_owing_cents": 1755 - 1550 - 300,
    }
    assert (usd["currency"], usd["gst_collected_cents"], usd["net_owing_cents"]) == ("USD", 1755, 1755)
    q2 = (
        await http.get(url + GST, headers=headers, params={"from": "2026-04-01", "to": "2026-06-30"})
    ).json()
    [q2_cad] = q2["totals"]
    assert (q2_cad["invoice_count"], q2_cad["input_tax_credits_cents"], q2_cad["instalments_paid_cents"]) == (
        1,
        999,
        300,
    )
    assert q2_cad["net_owing_cents"] == 1755 - 999 - 300
    empty = (
        await http.get(url + GST, headers=headers, params={"from": "2024-01-01", "to": "2024-12-31"})
    ).json()
    assert [(t["currency"], t["net_owing_cents"]) for t in empty["totals"]] == [("CAD", 0)]

    pnl = await http.get(url + PNL, headers=headers, params=Q1)
    assert pnl.status_code == 200, pnl.text
    cad_pnl = pnl.json()["totals"][0]
    assert cad_pnl == {
        "currency": "CAD",
        "invoice_count": 1,
        "revenue_cents": 13500,
        "tax_collected_cents": 1755,
        "expenses_by_category": [
            {"category": "fuel", "count": 1, "net_cents": 5000, "gst_cents": 250},
            {"category": "supplies", "count": 1, "net_cents": 10000, "gst_cents": 1300},
        ],
        "total_expenses_cents": 15000,
        "net_profit_cents": 13500 - 15000,
    }

    exported = await http.get(url + EXPORT, headers=headers, params=Q1)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "application/zip"
    assert (
        exported.headers["content-disposition"]
        == 'attachment; filename="gst_export_2026-01-01_2026-03-31.zip"'
    )
    files = unzip(exported.content)
    assert set(files) == {"summary.csv", "payments.csv", "expenses.csv", "instalments.csv"}
    summary = {row["currency"]: row for row in files["summary.csv"]}
    assert summary["CAD"]["gst_collected_cents"] == "1755" and summary["CAD"]["net_owing_cents"] == "-95"
    assert (
        summary["USD"]["gst_collected_cents"] == "1755" and summary["CAD"]["time_zone"] == "America/Toronto"
    )
    [payment] = files["payments.csv"]
    assert (payment["kind"], payment["received_on"], payment["invoice_number"], payment["amount_cents"]) == (
        "payment",
        "2026-03-31",
        late["number"],
        "5000",
    )
    assert payment["reference"] == "'=1+2", "a formula in a cell is written as text"
    vendors = sorted(row["vendor"] for row in files["expenses.csv"])
    assert vendors == ["'=cmd|' /C calc'!A0", "Mop Mart"], vendors
    [paid_instalment] = files["instalments.csv"]
    assert (paid_instalment["paid_on"], paid_instalment["reference"]) == ("2026-02-15", "'@SUM(A1)")


def unzip(content: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        return {
            name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8"), newline="")))
            for name in archive.namelist()
        }


async def test_finance_roles_the_accountant_pair_and_range_rules(gateways, gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    finance = await staff(http, url, headers, "FINANCE")
    made = await created(http, url + EXPENSES, finance, expense(gst_cents=100))
    for role in ("VIEWER", "DISPATCHER"):
        other = await staff(http, url, headers, role)
        for method, path in (
            ("GET", EXPENSES),
            ("GET", f"{EXPENSES}/{made['id']}"),
            ("DELETE", f"{EXPENSES}/{made['id']}"),
            ("GET", INSTALMENTS),
            ("GET", EXPORT),
            ("GET", GST),
            ("GET", PNL),
        ):
            refused = await http.request(method, url + path, headers=other, params=Q1)
            assert_problem(refused, 403, "forbidden_role")
        assert_problem(await http.post(url + EXPENSES, headers=other, json=expense()), 403)
    assert (await http.get(f"{url}{EXPENSES}/{made['id']}", headers=headers)).status_code == 200

    # Seed 003's line: curl -u "$..._BASIC_USERNAME:$..._BASIC_PASSWORD" ".../taxes/export?from=...&to=..."
    basic_gw = gateways.get(
        ACCOUNTANT_BASIC_USERNAME="accountant",
        ACCOUNTANT_BASIC_PASSWORD=STRONG,
        LEGACY_BASIC_AUTH_ENABLED="true",
    )
    pair = {
        "Authorization": "Basic " + base64.b64encode(f"accountant:{STRONG}".encode()).decode(),
        "X-Test-Org": org.org_id,
    }
    exported = await http.get(
        f"{basic_gw.url}{EXPORT}", headers=pair, params={"from": "2026-01-01", "to": "2026-03-31"}
    )
    assert exported.status_code == 200, exported.text
    assert unzip(exported.content)["expenses.csv"][0]["id"] == made["id"]
    by_pair = await http.post(f"{basic_gw.url}{EXPENSES}", headers=pair, json=expense(category="rent"))
    assert by_pair.status_code == 201, by_pair.text

    for path in (EXPORT, GST, PNL):
        missing = await http.get(url + path, headers=headers, params={"from": "2026-01-01"})
        assert_problem(missing, 422)
        empty = await http.get(url + path, headers=headers, params={"from": "", "to": "2026-01-01"})
        assert "from" in fields(assert_problem(empty, 422))
        backwards = await http.get(
            url + path, headers=headers, params={"from": "2026-03-31", "to": "2026-01-01"}
        )
        assert "to" in fields(assert_problem(backwards, 422))
        not_a_day = await http.get(
            url + path, headers=headers, params={"from": "2026-02-30", "to": "2026-03-31"}
        )
        assert "from" in fields(assert_problem(not_a_day, 422))
        too_long = await http.get(
            url + path, headers=headers, params={"from": "2025-01-01", "to": "2026-01-02"}
        )
        assert "366 days" in assert_problem(too_long, 422)["detail"]
        # A leap year is 366 days: the longest range allowed.
        leap = await http.get(url + path, headers=headers, params={"from": "2024-01-01", "to": "2024-12-31"})
        assert leap.status_code == 200, leap.text
