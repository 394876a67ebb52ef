"""/v1/admin/integrations at the gateway (issue 17), in front of the real integrations service and the
local fake Google and Intuit servers (tools/fake_google.py, tools/fake_quickbooks.py): staff signed in
for real, the provider's consent page answered as a person would, its redirect's code and state posted
to the callback as the console's page posts them.

Connect, choose a calendar, sync now and disconnect as an OWNER; the roles (any staff lists, OWNER and
ADMIN write); a provider other than google_calendar / quickbooks is a 404 that never reaches the
service; bad input is a 422 naming the field; ADMIN_READ_ONLY refuses the writes; and another org's
admin sees only its own org's integrations and cannot complete a connection another org started
(BOLA). Every org's sync state reaches the operators' /v1/admin/jobs/status."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tools.testkit import assert_clean, assert_problem, owner, staff

API = "/v1/admin/integrations"
PROVIDERS = ("google_calendar", "quickbooks")
INTEGRATION_FIELDS = {
    "provider",
    "configured",
    "status",
    "account_id",
    "account_name",
    "busy_team_id",
    "connected_by",
    "connected_at",
    "status_reason",
    "sync",
}
SYNC_FIELDS = {"last_sync_at", "last_success_at", "cursor", "counts", "last_error", "last_error_at"}
OPERATOR_PASSWORD = "Strong-operator-pass-" + "integrations-7d1e"


async def consent(authorization_url: str, *, deny: bool = False) -> dict[str, str]:
    """The person at the provider's consent page pressing Allow (or Deny): the redirect's query, which
    the console's /admin/settings/integrations page receives."""
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(authorization_url)
        assert page.status_code == 200, page.text
        answer = await browser.post(authorization_url, data={"decision": "deny" if deny else "allow"})
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert location.path == "/admin/settings/integrations", location
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def callback_body(back: dict[str, str]) -> dict[str, str]:
    """As the console's page posts the provider's query on (realmId is QuickBooks' company)."""
    return {
        "state": back.get("state", ""),
        "code": back.get("code", ""),
        "realm_id": back.get("realmId", ""),
        "error": back.get("error", ""),
    }


async def start(http: httpx.AsyncClient, url: str, headers: dict[str, str], provider: str) -> str:
    response = await http.post(f"{url}{API}/{provider}/connect", headers=headers)
    assert_clean(response)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"authorization_url", "state_expires_at"}, body
    assert body["state_expires_at"].endswith("Z"), body
    return str(body["authorization_url"])


async def connect(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], provider: str
) -> dict[str, Any]:
    back = await consent(await start(http, url, headers, provider))
    response = await http.post(f"{url}{API}/callback", headers=headers, json=callback_body(back))
    assert_clean(response)
    assert response.status_code == 200, response.text
    integration: dict[str, Any] = response.json()["integration"]
    assert integration["provider"] == provider and integration["status"] == "connected", integration
    return integration


async def listed(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await http.get(f"{url}{API}", headers=headers)
    assert_clean(response)
    assert response.status_code == 200, response.text
    items = response.json()["integrations"]
    assert all(set(item) == INTEGRATION_FIELDS for item in items), items
    return {item["provider"]: item for item in items}


async def test_an_owner_connects_google_chooses_a_calendar_syncs_and_disconnects(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, fake_google: Any
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    before = await listed(http, gateway.url, headers)
    assert set(before) == set(PROVIDERS)
    for item in before.values():
        assert item["configured"] is True and item["status"] == "disconnected", item
        assert item["account_id"] is None and item["connected_at"] is None, item

    url = await start(http, gateway.url, headers, "google_calendar")
    assert url.startswith(f"{fake_google.base_url}/oauth/authorize?"), url
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge_method"] == "S256" and query["code_challenge"], query
    back = await consent(url)
    assert back["state"] == query["state"]
    done = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=callback_body(back))
    assert_clean(done)
    assert done.status_code == 200, done.text
    google = done.json()["integration"]
    assert google["status"] == "connected" and google["account_id"] is None, google  # no calendar yet
    assert google["connected_by"] == org.owner_id and google["connected_at"].endswith("Z"), google
    # The state is used once: the same redirect again completes nothing.
    again = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=callback_body(back))
    assert_problem(again, 409)

    # No calendar chosen: a sync now is skipped, saying why.
    skipped = await http.post(f"{gateway.url}{API}/google_calendar/sync", headers=headers)
    assert skipped.status_code == 200, skipped.text
    assert skipped.json() == {"skipped": True, "skip_reason": "no_calendar", "counts": {}}

    calendars = await http.get(f"{gateway.url}{API}/google_calendar/calendars", headers=headers)
    assert_clean(calendars)
    assert calendars.status_code == 200, calendars.text
    found = calendars.json()["calendars"]
    assert found and all(set(c) == {"id", "summary", "primary", "access_role"} for c in found), found
    chosen_id = next(c["id"] for c in found if not c["primary"])
    chosen = await http.put(
        f"{gateway.url}{API}/google_calendar/calendar",
        headers=headers,
        json={"calendar_id": chosen_id, "busy_team_id": None},
    )
    assert_clean(chosen)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["integration"]["account_id"] == chosen_id
    assert chosen.json()["integration"]["busy_team_id"] is None
    # A calendar the grant cannot see is the caller's mistake, named.
    other = await http.put(
        f"{gateway.url}{API}/google_calendar/calendar",
        headers=headers,
        json={"calendar_id": "someone-else@fake-google.test"},
    )
    assert "calendar_id" in {e["field"] for e in assert_problem(other, 422)["errors"]}

    synced = await http.post(f"{gateway.url}{API}/google_calendar/sync", headers=headers)
    assert_clean(synced)
    assert synced.status_code == 200, synced.text
    result = synced.json()
    assert result["skipped"] is False and result["skip_reason"] is None, result
    assert all(isinstance(value, int) for value in result["counts"].values()), result
    state = (await listed(http, gateway.url, headers))["google_calendar"]["sync"]
    assert set(state) == SYNC_FIELDS, state
    assert state["last_sync_at"] and state["last_success_at"] and state["last_error"] is None, state

    gone = await http.post(f"{gateway.url}{API}/google_calendar/disconnect", headers=headers)
    assert_clean(gone)
    assert gone.status_code == 200, gone.text
    assert gone.json()["revoked_at_provider"] is True
    assert gone.json()["integration"]["status"] == "disconnected"
    after = await listed(http, gateway.url, headers)
    assert after["google_calendar"]["status"] == "disconnected"
    skipped = await http.post(f"{gateway.url}{API}/google_calendar/sync", headers=headers)
    assert skipped.json()["skip_reason"] == "not_connected", skipped.text


async def test_quickbooks_connects_to_the_company_the_redirect_names(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    # QuickBooks names the company beside the code: without it nothing is connected (and that sign-in
    # is used up: the person starts again).
    back = await consent(await start(http, gateway.url, headers, "quickbooks"))
    assert back["realmId"], back
    missing = await http.post(
        f"{gateway.url}{API}/callback", headers=headers, json={**callback_body(back), "realm_id": ""}
    )
    assert "realm_id" in {e["field"] for e in assert_problem(missing, 422)["errors"]}
    assert (await listed(http, gateway.url, headers))["quickbooks"]["status"] == "disconnected"
    back = await consent(await start(http, gateway.url, headers, "quickbooks"))
    done = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=callback_body(back))
    assert done.status_code == 200, done.text
    quickbooks = done.json()["integration"]
    assert quickbooks["status"] == "connected" and quickbooks["account_id"] == back["realmId"], quickbooks
    # Google Calendar is untouched by it.
    assert (await listed(http, gateway.url, headers))["google_calendar"]["status"] == "disconnected"


async def test_access_denied_at_the_provider_connects_nothing(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    back = await consent(await start(http, gateway.url, headers, "google_calendar"), deny=True)
    assert back["error"] == "access_denied" and "code" not in back, back
    refused = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=callback_body(back))
    problem = assert_problem(refused, 409)
    assert "denied" in problem["detail"], problem
    assert (await listed(http, gateway.url, headers))["google_calendar"]["status"] == "disconnected"


async def test_any_staff_lists_and_only_owner_or_admin_writes(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org = await make_org()
    owner_headers = await owner(http, gateway.url, org)
    admin = await staff(http, gateway.url, owner_headers, "ADMIN")
    # An ADMIN connects as the OWNER does.
    await connect(http, gateway.url, admin, "quickbooks")
    for role in ("DISPATCHER", "FINANCE", "VIEWER"):
        headers = await staff(http, gateway.url, owner_headers, role)
        assert (await listed(http, gateway.url, headers))["quickbooks"]["status"] == "connected", role
        for method, path, body in (
            ("POST", "/google_calendar/connect", None),
            ("POST", "/quickbooks/sync", None),
            ("POST", "/quickbooks/disconnect", None),
            ("GET", "/google_calendar/calendars", None),
            ("PUT", "/google_calendar/calendar", {"calendar_id": "x"}),
            ("POST", "/callback", {"state": "s", "code": "c"}),
        ):
            response = await http.request(method, f"{gateway.url}{API}{path}", headers=headers, json=body)
            assert_problem(response, 403, "forbidden_role")
    assert_problem(await http.get(f"{gateway.url}{API}"), 401)
    assert_problem(await http.post(f"{gateway.url}{API}/quickbooks/sync"), 401)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/outlook/connect"),
        ("POST", "/xero/sync"),
        ("POST", "/Google_Calendar/disconnect"),
        ("GET", "/quickbooks/calendars"),
        ("PUT", "/quickbooks/calendar"),
        ("POST", "/google_calendar%2F..%2Fquickbooks/connect"),
    ],
)
async def test_a_provider_other_than_the_two_is_not_found(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, method: str, path: str
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    response = await http.request(
        method, f"{gateway.url}{API}{path}", headers=headers, json={"calendar_id": "x"}
    )
    assert_problem(response, 404)


async def test_bad_input_is_a_422_naming_the_field(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    for body, field in (
        ({"code": "c"}, "state"),
        ({"state": "", "code": "c"}, "state"),
        ({"state": "s" * 513, "code": "c"}, "state"),
        ({"state": "s", "code": "c", "extra": 1}, "extra"),
    ):
        response = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=body)
        fields = {e["field"] for e in assert_problem(response, 422)["errors"]}
        assert any(field in name for name in fields), (body, fields)
    # A state this service never issued: a clear 4xx, nothing connected.
    unknown = await http.post(
        f"{gateway.url}{API}/callback", headers=headers, json={"state": "s", "code": "c"}
    )
    assert "state" in {e["field"] for e in assert_problem(unknown, 422)["errors"]}
    team = await http.put(
        f"{gateway.url}{API}/google_calendar/calendar",
        headers=headers,
        json={"calendar_id": "primary", "busy_team_id": "not-a-uuid"},
    )
    assert {"field": "busy_team_id", "message": "must be a UUID"} in assert_problem(team, 422)["errors"]
    missing = await http.put(f"{gateway.url}{API}/google_calendar/calendar", headers=headers, json={})
    assert "calendar_id" in " ".join(e["field"] for e in assert_problem(missing, 422)["errors"])


async def test_read_only_mode_refuses_the_writes_and_keeps_the_reads(
    gateways: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    gw = gateways.get(ADMIN_READ_ONLY="true")
    org = await make_org()
    headers = await owner(http, gw.url, org)
    assert set(await listed(http, gw.url, headers)) == set(PROVIDERS)
    for method, path in (
        ("POST", "/google_calendar/connect"),
        ("POST", "/quickbooks/disconnect"),
        ("POST", "/quickbooks/sync"),
        ("POST", "/callback"),
        ("PUT", "/google_calendar/calendar"),
    ):
        response = await http.request(method, f"{gw.url}{API}{path}", headers=headers, json={})
        assert_problem(response, 409, "read_only")


async def test_another_org_sees_only_its_own_and_cannot_complete_a_connection_started_elsewhere(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org_a, org_b = await make_org("Org A"), await make_org("Org B")
    a_headers = await owner(http, gateway.url, org_a)
    b_owner = await owner(http, gateway.url, org_b)
    b_admin = await staff(http, gateway.url, b_owner, "ADMIN")

    # A starts connecting Google; B's admin gets hold of the redirect (code and state) and posts it.
    back = await consent(await start(http, gateway.url, a_headers, "google_calendar"))
    for headers in (b_admin, b_owner):
        stolen = await http.post(f"{gateway.url}{API}/callback", headers=headers, json=callback_body(back))
        assert 400 <= stolen.status_code < 500, stolen.text
        assert_problem(stolen, stolen.status_code)
        assert (await listed(http, gateway.url, headers))["google_calendar"]["status"] == "disconnected"
    # Nothing of A's was used up or changed by it: A completes its own connection.
    done = await http.post(f"{gateway.url}{API}/callback", headers=a_headers, json=callback_body(back))
    assert done.status_code == 200, done.text

    # B connects QuickBooks: A's list does not show it, and B's does not show A's Google.
    await connect(http, gateway.url, b_admin, "quickbooks")
    a_view, b_view = await listed(http, gateway.url, a_headers), await listed(http, gateway.url, b_admin)
    assert (a_view["google_calendar"]["status"], a_view["quickbooks"]["status"]) == (
        "connected",
        "disconnected",
    )
    assert (b_view["google_calendar"]["status"], b_view["quickbooks"]["status"]) == (
        "disconnected",
        "connected",
    )
    assert b_view["quickbooks"]["connected_by"] != org_a.owner_id
    # B's calendars are B's grant's: with no Google connection there are none to list.
    assert_problem(await http.get(f"{gateway.url}{API}/google_calendar/calendars", headers=b_admin), 409)
    # B disconnecting Google touches nothing of A's.
    await http.post(f"{gateway.url}{API}/google_calendar/disconnect", headers=b_admin)
    assert (await listed(http, gateway.url, a_headers))["google_calendar"]["status"] == "connected"


async def test_operators_see_every_org_s_sync_state_in_jobs_status(
    gateways: Any, gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    await connect(http, gateway.url, headers, "quickbooks")
    synced = await http.post(f"{gateway.url}{API}/quickbooks/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    assert synced.json()["skipped"] is False, synced.text

    operator_gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=OPERATOR_PASSWORD,
        LEGACY_BASIC_AUTH_ENABLED="true",
        DEFAULT_ORG_ID=org.org_id,
    )
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{OPERATOR_PASSWORD}".encode()).decode()}
    response = await http.get(f"{operator_gw.url}/v1/admin/jobs/status", headers=basic)
    assert_clean(response)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["integration_syncs_unavailable"] is None, body
    mine = [s for s in body["integration_syncs"] if s["org_id"] == org.org_id]
    assert [s["provider"] for s in mine] == ["quickbooks"], mine
    assert set(mine[0]) == {"org_id", "provider", *SYNC_FIELDS}, mine
    assert mine[0]["last_sync_at"] and mine[0]["last_success_at"], mine
    # The jobs that drive them are listed with the others, every minute (the service applies each
    # org's own interval).
    jobs = {job["name"]: job for job in body["jobs"]}
    assert jobs["gcal-sync"]["interval_seconds"] == 60 and jobs["qbo-sync"]["interval_seconds"] == 60
    # An org's own owner never sees the suite-wide view.
    assert_problem(await http.get(f"{gateway.url}/v1/admin/jobs/status", headers=headers), 403)


async def test_readyz_asks_integrations_and_a_gateway_without_it_says_it_is_not_deployed(
    gateways: Any, gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    checks = {c["name"]: c for c in (await http.get(f"{gateway.url}/readyz")).json()["checks"]}
    assert checks["service:integrations"]["ok"] is True, checks.get("service:integrations")

    bare = gateways.get(INTEGRATIONS_GRPC_TARGET="")
    checks = {c["name"]: c for c in (await http.get(f"{bare.url}/readyz")).json()["checks"]}
    assert "service:integrations" not in checks and "service:iam" in checks, checks
    org = await make_org()
    headers = await owner(http, bare.url, org)
    for method, path in (("GET", ""), ("POST", "/quickbooks/sync")):
        response = await http.request(method, f"{bare.url}{API}{path}", headers=headers)
        assert (
            "INTEGRATIONS_GRPC_TARGET" in assert_problem(response, 503, "integrations_not_deployed")["detail"]
        )
