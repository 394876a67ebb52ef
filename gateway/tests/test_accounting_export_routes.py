"""The monthly accounting exports kept for review, over HTTP (seed 002 "Accounting export v1"):
`GET /v1/admin/exports/accounting` and `GET /v1/admin/exports/accounting/{export_id}`, the gateway in
front of the real notify, staff signed in for real. The exports are written as the accounting-export
job leaves them with EXPORT_MODE off (the job itself is tested in services/jobs/tests); writing them as
the superuser is quicker than running it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from gateway.tests.test_outbox_routes import dead_row
from tools.testkit import assert_problem, owner, sql, staff

CSV = "invoice_id,invoice_number,client_name\r\n1,INV-000001,'=HYPERLINK(x)\r\n"


async def stored_export(stack: Any, org_id: str, period: str = "2026-11", content: str = CSV) -> str:
    """A monthly CSV kept in notify.export_events (mode accounting_csv), as QueueExport keeps it."""
    export_id = str(uuid.uuid4())
    payload = {
        "type": "accounting_csv",
        "data": {
            "org_id": org_id,
            "period": period,
            "filename": f"accounting-{period}.csv",
            "content_type": "text/csv",
            "rows": content.count("\r\n") - 1,
            "bytes": len(content.encode()),
            "csv": content,
        },
    }
    await sql(
        stack.admin_url,
        "INSERT INTO notify.export_events (id, org_id, mode, dedupe_key, payload, attempts)"
        " VALUES (%s, %s, 'accounting_csv', %s, %s, 0)",
        (export_id, org_id, f"export:accounting_csv:{period}", json.dumps(payload)),
    )
    return export_id


async def test_finance_staff_list_and_download_the_kept_exports(gateway, http, make_org, stack):
    org = await make_org("Export Review Org")
    headers = await owner(http, gateway.url, org)
    november = await stored_export(stack, org.org_id)
    october = await stored_export(stack, org.org_id, "2026-10", "invoice_id\r\n")
    await dead_row(stack, org.org_id, kind="export", letter=True)  # a dead letter is no kept export
    finance = await staff(http, gateway.url, headers, "FINANCE")

    for who in (headers, finance):
        listed = await http.get(f"{gateway.url}/v1/admin/exports/accounting", headers=who)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert [e["id"] for e in body] == [november, october]
    assert body[0] == {
        "id": november,
        "period": "2026-11",
        "filename": "accounting-2026-11.csv",
        "rows": 1,
        "bytes": len(CSV.encode()),
        "created_at": body[0]["created_at"],
    }
    assert body[0]["created_at"].endswith("Z")
    one = await http.get(f"{gateway.url}/v1/admin/exports/accounting?limit=1&offset=1", headers=finance)
    assert [e["id"] for e in one.json()] == [october]

    got = await http.get(f"{gateway.url}/v1/admin/exports/accounting/{november}", headers=finance)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "text/csv; charset=utf-8"
    assert got.headers["content-disposition"] == 'attachment; filename="accounting-2026-11.csv"'
    assert got.headers["cache-control"] == "no-store"
    assert got.content == CSV.encode()
    # The streamed CSV route beside it is not taken for an export id.
    streamed = await http.get(f"{gateway.url}/v1/admin/exports/accounting.csv", headers=finance)
    assert streamed.status_code == 200 and streamed.text.startswith("invoice_id,")


async def test_other_roles_and_other_orgs_get_nothing(gateway, http, make_org, stack):
    org, other = await make_org("Export Owner Org"), await make_org("Export Other Org")
    headers = await owner(http, gateway.url, org)
    export_id = await stored_export(stack, org.org_id)
    for role in ("DISPATCHER", "VIEWER"):
        refused = await staff(http, gateway.url, headers, role)
        assert_problem(await http.get(f"{gateway.url}/v1/admin/exports/accounting", headers=refused), 403)
        assert_problem(
            await http.get(f"{gateway.url}/v1/admin/exports/accounting/{export_id}", headers=refused), 403
        )
    stranger = await owner(http, gateway.url, other)
    assert (await http.get(f"{gateway.url}/v1/admin/exports/accounting", headers=stranger)).json() == []
    assert_problem(
        await http.get(f"{gateway.url}/v1/admin/exports/accounting/{export_id}", headers=stranger), 404
    )
    assert_problem(await http.get(f"{gateway.url}/v1/admin/exports/accounting/{export_id}"), 401)


async def test_bad_input_is_a_clear_422(gateway, http, make_org):
    org = await make_org("Export Bad Input Org")
    headers = await owner(http, gateway.url, org)
    bad_id = await http.get(f"{gateway.url}/v1/admin/exports/accounting/not-an-id", headers=headers)
    assert assert_problem(bad_id, 422)["errors"][0]["field"] == "export_id"
    for query in ("limit=0", "limit=201", "offset=-1", "limit=x"):
        assert_problem(
            await http.get(f"{gateway.url}/v1/admin/exports/accounting?{query}", headers=headers), 422
        )
    missing = await http.get(f"{gateway.url}/v1/admin/exports/accounting/{uuid.uuid4()}", headers=headers)
    assert_problem(missing, 404)
