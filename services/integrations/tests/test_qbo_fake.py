"""The local QuickBooks Online (tools/fake_quickbooks.py) keeps the rules qbo-sync relies on, so a sync
that broke them would fail here and in test_qbo_sync: the query language's subset (paging, times with
offsets, references and emails by value), requestid answering a repeated create with its first result,
SyncToken checks, unique display names and document numbers, tokens of the path's company only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.integrations.qbo import quote
from tools.fake_oauth import OAuthGrant, OAuthServer
from tools.fake_quickbooks import COMPANY_TZ, FakeQuickBooksServer, _matches, parse_query

REALM = "9130357000000042"


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient, dict[str, str], FakeQuickBooksServer]]:
    oauth = OAuthServer(realm_id=REALM)
    server = FakeQuickBooksServer(oauth)
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    # A grant for the company, made directly in the OAuth server's state (the flow has its own tests).
    grant = OAuthGrant(
        grant_id="g", client_id="fake-client-id", scope="s", refresh_token="rt", realm_id=REALM
    )
    oauth.grants[grant.refresh_token] = grant
    issued = oauth._tokens(grant).body
    assert isinstance(issued, bytes)
    token = json.loads(issued)["access_token"]
    yield client, {"Authorization": f"Bearer {token}"}, server
    await client.close()


def test_the_query_subset_parses_and_filters_like_intuits() -> None:
    parsed = parse_query(
        "SELECT * FROM Payment WHERE MetaData.LastUpdatedTime >= '2026-12-01T10:00:00+00:00'"
        " ORDERBY MetaData.LastUpdatedTime STARTPOSITION 101 MAXRESULTS 100"
    )
    assert (parsed.entity, parsed.start, parsed.max_results, parsed.order) == (
        "Payment",
        101,
        100,
        ("MetaData.LastUpdatedTime", False),
    )
    # 02:30 in the company's zone (UTC-8) is 10:30 UTC: after 10:00 UTC, compared as instants.
    later = {"MetaData": {"LastUpdatedTime": datetime(2026, 12, 1, 2, 30, tzinfo=COMPANY_TZ).isoformat()}}
    earlier = {"MetaData": {"LastUpdatedTime": datetime(2026, 12, 1, 1, 30, tzinfo=COMPANY_TZ).isoformat()}}
    assert _matches(later, parsed.conditions) and not _matches(earlier, parsed.conditions)
    by_email = parse_query(
        f"select * from customer where PrimaryEmailAddr = {quote('o' + chr(39) + 'hara@x.ca')}"
    )
    assert _matches({"PrimaryEmailAddr": {"Address": "O'Hara@x.ca"}}, by_email.conditions)
    by_ref = parse_query("SELECT * FROM Invoice WHERE CustomerRef = '3' AND DocNumber IN ('INV-000001', 'X')")
    assert _matches({"CustomerRef": {"value": "3"}, "DocNumber": "INV-000001"}, by_ref.conditions)
    assert not _matches({"CustomerRef": {"value": "4"}, "DocNumber": "INV-000001"}, by_ref.conditions)


async def test_a_repeated_create_answers_its_first_result_and_updates_need_the_sync_token(
    api: tuple[TestClient, dict[str, str], FakeQuickBooksServer],
) -> None:
    client, auth, server = api
    base = f"/v3/company/{REALM}"
    first = await client.post(f"{base}/customer?requestid=r1", json={"DisplayName": "Ada"}, headers=auth)
    again = await client.post(f"{base}/customer?requestid=r1", json={"DisplayName": "Ada"}, headers=auth)
    assert (await first.json())["Customer"]["Id"] == (await again.json())["Customer"]["Id"]
    duplicate = await client.post(f"{base}/customer?requestid=r2", json={"DisplayName": "ada"}, headers=auth)
    assert duplicate.status == 400 and (await duplicate.json())["Fault"]["Error"][0]["code"] == "6240"
    customer = (await first.json())["Customer"]["Id"]
    line: dict[str, Any] = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 135,
        "SalesItemLineDetail": {"Qty": 3, "UnitPrice": 45, "TaxCodeRef": {"value": "7"}},
    }
    body = {"CustomerRef": {"value": customer}, "DocNumber": "INV-000001", "Line": [line]}
    created = await (await client.post(f"{base}/invoice?requestid=i1", json=body, headers=auth)).json()
    invoice = created["Invoice"]
    assert (invoice["TotalAmt"], invoice["TxnTaxDetail"]["TotalTax"]) == (152.55, 17.55)
    same_number = await client.post(f"{base}/invoice?requestid=i2", json=body, headers=auth)
    assert (await same_number.json())["Fault"]["Error"][0]["code"] == "6140"
    stale = await client.post(
        f"{base}/invoice", json={"Id": invoice["Id"], "SyncToken": "9", "sparse": True}, headers=auth
    )
    assert (await stale.json())["Fault"]["Error"][0]["code"] == "5010"
    overridden = await client.post(
        f"{base}/invoice",
        json={"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "TxnTaxDetail": {"TotalTax": 17.54}},
        headers=auth,
    )
    assert (await overridden.json())["Invoice"]["TotalAmt"] == 152.54
    # Paging and times: the invoice changed now, so it is found from an hour ago, a page of one.
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    query = f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{since}' STARTPOSITION 1 MAXRESULTS 1"
    page = await (await client.get(f"{base}/query", params={"query": query}, headers=auth)).json()
    assert [i["Id"] for i in page["QueryResponse"]["Invoice"]] == [invoice["Id"]]
    # Another company's path with this token, or no token: refused.
    other = await client.get("/v3/company/123/companyinfo/123", headers=auth)
    assert other.status == 403
    assert (await client.get(f"{base}/companyinfo/{REALM}")).status == 401
    assert server.companies[REALM].data["Invoice"][invoice["Id"]]["SyncToken"] == "1"
