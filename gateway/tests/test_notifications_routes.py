"""The scheduler's endpoints of seed 004 (email-scan, retention cleanup) and the notification digests'
settings, at the gateway over HTTP in front of the real services: status codes, roles, validation,
read-only mode, Basic Auth, and one org never seeing another's settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from tools.testkit import assert_problem, basic, owner, staff

STRONG_ADMIN_PASSWORD = "Strong-scheduler-pass-" + "4e8a1f0c"
COUNTS = {"scanned", "enqueued", "duplicates", "skipped_no_email"}


async def confirmed_booking(http: httpx.AsyncClient, url: str, headers: dict[str, str], hours: float) -> str:
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts.isoformat(),
            "duration_minutes": 90,
            "client_name": "Robin",
            "cleaning_type": "standard",
            "beds": 1,
            "baths": 1,
            "client_email": f"robin-{uuid.uuid4().hex[:8]}@example.com",
        },
    )
    assert created.status_code == 201, created.text
    booking_id = created.json()["id"]
    done = await http.post(f"{url}/v1/admin/bookings/{booking_id}/confirm", headers=headers)
    assert done.status_code == 200, done.text
    return str(booking_id)


# --- digests -------------------------------------------------------------------------------------


async def test_digest_settings_round_trip_and_stay_in_their_org(gateway, http, make_org):
    url = f"{gateway.url}/v1/admin/notifications"
    org_a, org_b = await make_org(), await make_org()
    a, b = await owner(http, gateway.url, org_a), await owner(http, gateway.url, org_b)

    empty = await http.get(f"{url}/digests", headers=a)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"module_enabled": False, "digests": []}

    body = {"enabled": True, "schedule": "daily", "recipients": ["Ops@Example.com", "ops@example.com"]}
    saved = await http.put(f"{url}/digests/ops_daily", headers=a, json=body)
    assert saved.status_code == 200, saved.text
    digest = saved.json()
    assert {k: digest[k] for k in ("digest_key", "enabled", "schedule", "recipients")} == {
        "digest_key": "ops_daily",
        "enabled": True,
        "schedule": "daily",
        "recipients": ["ops@example.com"],
    }
    assert digest["updated_at"]
    changed = await http.put(
        f"{url}/digests/ops_daily", headers=a, json={"enabled": False, "schedule": "weekly", "recipients": []}
    )
    assert changed.status_code == 200 and changed.json()["schedule"] == "weekly", changed.text
    module = await http.put(f"{url}/module", headers=a, json={"enabled": True})
    assert module.status_code == 200 and module.json() == {"module_enabled": True}, module.text

    listed = (await http.get(f"{url}/digests", headers=a)).json()
    assert listed["module_enabled"] is True
    assert [(d["digest_key"], d["enabled"], d["schedule"]) for d in listed["digests"]] == [
        ("ops_daily", False, "weekly")
    ]

    # Org B sees none of it, and its own digest of the same key is its own.
    assert (await http.get(f"{url}/digests", headers=b)).json() == {"module_enabled": False, "digests": []}
    theirs = await http.put(
        f"{url}/digests/ops_daily", headers=b, json={"schedule": "monthly", "recipients": ["b@example.com"]}
    )
    assert theirs.status_code == 200 and theirs.json()["enabled"] is True, theirs.text
    mine = (await http.get(f"{url}/digests", headers=a)).json()["digests"]
    assert [(d["schedule"], d["recipients"]) for d in mine] == [("weekly", [])]


async def test_bad_digest_input_is_a_clear_422(gateway, http, make_org):
    url = f"{gateway.url}/v1/admin/notifications"
    a = await owner(http, gateway.url, await make_org())
    for key, body in (
        ("ops", {"schedule": "hourly", "recipients": []}),
        ("ops", {"recipients": []}),
        ("ops", {"schedule": "daily", "recipients": [f"r{i}@example.com" for i in range(51)]}),
        ("ops", {"schedule": "daily", "recipients": "ops@example.com"}),
        ("ops", {"schedule": "daily", "recipients": [], "extra": 1}),
        ("Not Valid", {"schedule": "daily", "recipients": []}),
        ("x" * 101, {"schedule": "daily", "recipients": []}),
    ):
        assert_problem(await http.put(f"{url}/digests/{key}", headers=a, json=body), 422)
    # An address the schema lets through but the service refuses: the field is named.
    refused = await http.put(
        f"{url}/digests/ops", headers=a, json={"schedule": "daily", "recipients": ["ok@example.com", "nope"]}
    )
    problem = assert_problem(refused, 422)
    assert problem["errors"][0]["field"] == "recipients[1]"
    for body in ({}, {"enabled": "maybe"}, {"enabled": True, "more": 1}):
        assert_problem(await http.put(f"{url}/module", headers=a, json=body), 422)
    assert (await http.get(f"{url}/digests", headers=a)).json()["digests"] == []


async def test_roles(gateway, http, make_org):
    org = await make_org()
    a = await owner(http, gateway.url, org)
    viewer = await staff(http, gateway.url, a, "VIEWER")
    dispatcher = await staff(http, gateway.url, a, "DISPATCHER")
    url = f"{gateway.url}/v1/admin"
    assert (await http.get(f"{url}/notifications/digests", headers=viewer)).status_code == 200
    body = {"schedule": "daily", "recipients": []}
    assert_problem(await http.put(f"{url}/notifications/digests/ops", headers=viewer, json=body), 403)
    assert_problem(
        await http.put(f"{url}/notifications/module", headers=dispatcher, json={"enabled": True}), 403
    )
    for path in ("email-scan", "retention/cleanup"):
        assert_problem(await http.post(f"{url}/{path}", headers=dispatcher), 403)
        assert_problem(await http.post(f"{url}/{path}"), 401)
    assert_problem(await http.get(f"{url}/notifications/digests"), 401)


# --- the scheduler's endpoints ----------------------------------------------------------------------


async def test_scheduler_endpoints_with_basic_auth(gateways, gateway, stack, http, make_org):
    org, other = await make_org(), await make_org()
    await confirmed_booking(http, gateway.url, await owner(http, gateway.url, org), 3)
    gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=STRONG_ADMIN_PASSWORD,
        LEGACY_BASIC_AUTH_ENABLED="true",
    )
    admin = {**basic("admin", STRONG_ADMIN_PASSWORD), "X-Test-Org": org.org_id}

    scanned = await http.post(f"{gw.url}/v1/admin/email-scan", headers=admin)
    assert scanned.status_code == 202, scanned.text
    assert scanned.json() == {"scanned": 1, "enqueued": 1, "duplicates": 0, "skipped_no_email": 0}
    again = await http.post(f"{gw.url}/v1/admin/email-scan", headers=admin)
    assert again.status_code == 202 and again.json()["duplicates"] == 1, again.text

    # A delivered email from long ago in each org: the cleanup removes the caller's org's only.
    old = {org.org_id: uuid.uuid4(), other.org_id: uuid.uuid4()}
    with psycopg.connect(stack.admin_url) as conn:
        for org_id, row_id in old.items():
            conn.execute(
                "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, status, updated_at) "
                "VALUES (%s, %s, 'email', %s, '{}', 'sent', now() - interval '400 days')",
                (row_id, org_id, f"test:old:{row_id}"),
            )
    cleaned = await http.post(f"{gw.url}/v1/admin/retention/cleanup", headers=admin)
    assert cleaned.status_code == 200, cleaned.text
    # Booking keeps leads by default (RETENTION_LEAD_DAYS=0); no deletion request is open in the org.
    assert cleaned.json() == {
        "deleted": 1,
        "deletion_requests_processed": 0,
        "deletion_requests_completed": 0,
        "deletion_steps_failed": 0,
    }
    with psycopg.connect(stack.admin_url) as conn:
        left = conn.execute(
            "SELECT org_id::text FROM notify.outbox_events WHERE id = ANY(%s)", (list(old.values()),)
        ).fetchall()
    assert left == [(other.org_id,)]


async def test_read_only_mode_blocks_the_scheduler_writes(gateways, gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    read_only = gateways.get(ADMIN_READ_ONLY="true")
    url = f"{read_only.url}/v1/admin"
    assert_problem(await http.post(f"{url}/email-scan", headers=headers), 409, "read_only")
    assert_problem(await http.post(f"{url}/retention/cleanup", headers=headers), 409, "read_only")
    body = {"schedule": "daily", "recipients": []}
    assert_problem(await http.put(f"{url}/notifications/digests/ops", headers=headers, json=body), 409)
    assert_problem(
        await http.put(f"{url}/notifications/module", headers=headers, json={"enabled": True}), 409
    )
    listed = await http.get(f"{url}/notifications/digests", headers=headers)
    assert listed.status_code == 200 and listed.json()["digests"] == []
    # And with read-only off, the same call is accepted.
    accepted = await http.post(f"{gateway.url}/v1/admin/email-scan", headers=headers)
    assert accepted.status_code == 202 and set(accepted.json()) == COUNTS, accepted.text
