"""The accounting CSV through the gateway (`GET /v1/admin/exports/accounting.csv`), in front of the real
services: a client named like a formula comes out as text, an invoice issued at 23:30 local on the
last day of a month is in that month, the repeated status filter, finance roles and the accountant
pair, other orgs never in it, bad input as Problem+JSON, many pages streamed, and a transfer that
breaks when a later page fails instead of a file that is silently short.

Issue times are moved with SQL as the database admin (RLS bypassed on purpose): "23:30 on 30
November" cannot be waited for."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.tests.test_billing_routes import issued_invoice, new_invoice
from tools.processes import service_proc
from tools.testkit import assert_problem, owner, sql, staff

EXPORT = "/v1/admin/exports/accounting.csv"
# The header row, as docs/billing.md promises it to accountants.
COLUMNS = (
    "invoice_id",
    "invoice_number",
    "status",
    "issue_date",
    "due_date",
    "client_name",
    "client_email",
    "currency",
    "subtotal_cents",
    "taxable_subtotal_cents",
    "tax_cents",
    "total_cents",
    "tax_rate_basis",
    "paid_cents",
    "refunded_cents",
    "balance_cents",
    "last_payment_date",
    "booking_id",
)
STRONG = "Strong-accountant-pass-" + "5d2f8e1a"
EVIL = '=HYPERLINK("https://evil.example","x")'


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == list(COLUMNS)
    return list(reader)


async def move(stack: Any, invoice_id: str, issued_at: datetime) -> None:
    await sql(
        stack.admin_url, "UPDATE billing.invoices SET issued_at = %s WHERE id = %s", (issued_at, invoice_id)
    )


async def bulk_invoices(stack: Any, org_id: str, count: int) -> None:
    """`count` issued invoices, one a minute, written in one statement (the API would take minutes)."""
    await sql(
        stack.admin_url,
        "INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,"
        " issued_at, due_date, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis, total_cents)"
        " SELECT gen_random_uuid(), %s, 'INV-' || lpad(n::text, 6, '0'), 'SENT', 'CAD', 'Client ' || n,"
        " 'c' || n || '@example.com', timestamptz '2026-01-01 12:00Z' + n * interval '1 minute',"
        " date '2026-02-01', 1000, 1000, 130, 13, 1130 FROM generate_series(1, %s) AS n",
        (org_id, count),
    )


async def test_injection_time_zone_status_and_other_orgs(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org(name="Maple Books", time_zone="America/Toronto")
    headers = await owner(http, url, org)
    evil = await issued_invoice(http, url, headers, client_name=EVIL)
    # 23:30 on 30 November in Toronto, 04:30 on 1 December in UTC: a November invoice.
    await move(stack, evil["id"], datetime(2026, 12, 1, 4, 30, tzinfo=UTC))
    december = await issued_invoice(http, url, headers, client_name="+1 555 0100")
    await move(stack, december["id"], datetime(2026, 12, 1, 5, 30, tzinfo=UTC))  # 00:30 on 1 December
    voided = await issued_invoice(http, url, headers)
    await move(stack, voided["id"], datetime(2026, 11, 15, 17, tzinfo=UTC))
    assert (
        await http.post(f"{url}/v1/admin/invoices/{voided['id']}/void", headers=headers)
    ).status_code == 200
    await new_invoice(http, url, headers)  # a draft: never a row
    stranger = await make_org(name="Other Books", time_zone="America/Toronto")
    theirs = await issued_invoice(http, url, await owner(http, url, stranger))
    await move(stack, theirs["id"], datetime(2026, 11, 20, 17, tzinfo=UTC))

    november = await http.get(
        f"{url}{EXPORT}", headers=headers, params={"from": "2026-11-01", "to": "2026-11-30"}
    )
    rows = rows_of(november)
    assert november.headers["content-disposition"] == (
        'attachment; filename="accounting_2026-11-01_2026-11-30.csv"'
    )
    assert [r["invoice_id"] for r in rows] == [voided["id"], evil["id"]]
    first = rows[1]
    # Text for a spreadsheet, not a formula; what the client is called is still all there.
    assert first["client_name"] == "'" + EVIL
    assert (first["issue_date"], first["invoice_number"], first["status"]) == (
        "2026-11-30",
        evil["number"],
        "SENT",
    )
    assert (first["subtotal_cents"], first["tax_cents"], first["total_cents"], first["balance_cents"]) == (
        str(evil["subtotal_cents"]),
        str(evil["tax_cents"]),
        str(evil["total_cents"]),
        str(evil["total_cents"]),
    )
    assert (rows[0]["status"], rows[0]["balance_cents"]) == ("VOID", "0")

    later = rows_of(
        await http.get(f"{url}{EXPORT}", headers=headers, params={"from": "2026-12-01", "to": "2026-12-31"})
    )
    assert [(r["invoice_id"], r["client_name"]) for r in later] == [(december["id"], "'+1 555 0100")]
    # `status` repeated: either; none: every issued invoice of the org, and only of this org.
    both = await http.get(f"{url}{EXPORT}?status=VOID&status=SENT&to=2026-11-30", headers=headers)
    assert {r["invoice_id"] for r in rows_of(both)} == {voided["id"], evil["id"]}
    only_void = rows_of(await http.get(f"{url}{EXPORT}", headers=headers, params={"status": "VOID"}))
    assert [r["invoice_id"] for r in only_void] == [voided["id"]]
    everything = rows_of(await http.get(f"{url}{EXPORT}", headers=headers))
    assert {r["invoice_id"] for r in everything} == {voided["id"], evil["id"], december["id"]}


async def test_bad_input_is_a_problem(gateway, http, make_org):
    url = gateway.url
    headers = await owner(http, url, await make_org())

    def fields(problem: dict[str, Any]) -> list[str]:
        return [e["field"] for e in problem.get("errors") or []]

    backwards = await http.get(
        f"{url}{EXPORT}", headers=headers, params={"from": "2026-12-01", "to": "2026-11-01"}
    )
    assert fields(assert_problem(backwards, 422)) == ["from"]
    unknown = await http.get(f"{url}{EXPORT}?status=PAID&status=LOST", headers=headers)
    problem = assert_problem(unknown, 422)
    assert fields(problem) == ["status"] and "LOST" in problem["detail"] and "OVERDUE" in problem["detail"]
    draft = assert_problem(await http.get(f"{url}{EXPORT}?status=DRAFT", headers=headers), 422)
    assert "no number" in draft["detail"]
    for params in ({"from": "yesterday"}, {"to": "2026-02-30"}, {"status": ["SENT"] * 11}):
        assert_problem(await http.get(f"{url}{EXPORT}", headers=headers, params=params), 422)


async def test_roles_and_the_accountant_pair(gateways, gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    for role in ("VIEWER", "DISPATCHER"):
        refused = await http.get(f"{url}{EXPORT}", headers=await staff(http, url, headers, role))
        assert_problem(refused, 403, "forbidden_role")
    finance = rows_of(await http.get(f"{url}{EXPORT}", headers=await staff(http, url, headers, "FINANCE")))
    assert [r["invoice_id"] for r in finance] == [invoice["id"]]
    assert_problem(await http.get(f"{url}{EXPORT}"), 401)
    basic_gw = gateways.get(
        ACCOUNTANT_BASIC_USERNAME="accountant",
        ACCOUNTANT_BASIC_PASSWORD=STRONG,
        LEGACY_BASIC_AUTH_ENABLED="true",
    )
    pair = {
        "Authorization": "Basic " + base64.b64encode(f"accountant:{STRONG}".encode()).decode(),
        "X-Test-Org": org.org_id,
    }
    accountant = rows_of(await http.get(f"{basic_gw.url}{EXPORT}", headers=pair))
    assert [r["invoice_id"] for r in accountant] == [invoice["id"]]


async def test_many_pages_stream_and_a_failed_page_breaks_the_transfer(
    billing, gateways, http, make_org, stack
):
    # A billing of its own with pages of 7 rows, so 3,000 invoices are 429 pages; the gateway in front of it.
    proc = service_proc(
        "billing",
        {**billing.env, "ACCOUNTING_EXPORT_PAGE_SIZE": "7"},
        stack.work_dir / "logs",
        label="billing-accounting-pages",
    )
    try:
        await proc.start().wait_ready_async()
        gw = await asyncio.to_thread(gateways.get, BILLING_GRPC_TARGET=proc.target)
        org = await make_org()
        headers = await owner(http, gw.url, org)
        await bulk_invoices(stack, org.org_id, 3000)
        rows = rows_of(await http.get(f"{gw.url}{EXPORT}", headers=headers))
        assert [r["invoice_number"] for r in rows] == [f"INV-{n:06d}" for n in range(1, 3001)]
        assert len({r["invoice_id"] for r in rows}) == 3000

        # Billing goes away once the 200 and the first page are on their way (the gateway has ~430 pages
        # still to ask for): the client must see a broken transfer, not a short file that looks whole.
        received = b""
        async with http.stream("GET", f"{gw.url}{EXPORT}", headers=headers) as streamed:
            assert streamed.status_code == 200
            await asyncio.to_thread(proc.kill)
            with pytest.raises(httpx.RemoteProtocolError):
                async for chunk in streamed.aiter_bytes():
                    received += chunk
        assert received.startswith(b"invoice_id,") and received.count(b"\r\n") < 3001
    finally:
        await asyncio.to_thread(proc.stop)
