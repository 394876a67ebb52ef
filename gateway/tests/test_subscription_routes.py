"""The suite's own subscription through the gateway, in front of the real billing and booking processes
and NATS (seed 002 "Pause/resume playbook"): status, pause and resume with their fields and 409s,
roles, the plans and a plan change, the audit, and the entitlement gate: while paused, booking (told by
billing's event) refuses new bookings and workers with 409 `subscription_paused`, and reads go on."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cws.billing.v1 import events_pb2 as billing_events

from tools.testkit import assert_problem, eventually, owner, sql, staff

BOOKING = {
    "starts_at": "",
    "duration_minutes": 120,
    "client_name": "Casey Client",
    "client_email": "casey@example.com",
    "cleaning_type": "standard",
    "beds": 2,
    "baths": 1,
}


def slot(hours_from_now: float) -> str:
    return (datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours_from_now)).isoformat()


async def create_booking(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    created = await http.post(
        f"{url}/v1/admin/bookings", headers=headers, json={**BOOKING, "starts_at": slot(48)}
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def status(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.get(f"{url}/v1/billing/status", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def act(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], action: str, reason: str
) -> httpx.Response:
    return await http.post(f"{url}/v1/billing/{action}", headers=headers, json={"reason_code": reason})


async def new_booking(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    return await http.post(
        f"{url}/v1/admin/bookings", headers=headers, json={**BOOKING, "starts_at": slot(72)}
    )


async def new_worker(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    name = f"Wendy {uuid.uuid4().hex[:6]}"
    return await http.post(f"{url}/v1/admin/workers", headers=headers, json={"name": name})


def assert_paused_refusal(response: httpx.Response) -> None:
    body = assert_problem(response, 409, "subscription_paused")
    assert "subscription is paused" in body["detail"] and "/v1/billing/resume" in body["detail"], body


async def refused_while_paused(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    """Once booking has heard the pause: creating a booking is refused (nothing else waits for it)."""

    async def refused() -> httpx.Response | None:
        response = await new_booking(http, url, headers)
        assert response.status_code in (201, 409), response.text
        return response if response.status_code == 409 else None

    assert_paused_refusal(await eventually(refused, timeout=30, message="booking hearing the pause"))


async def test_pause_blocks_creating_work_and_resume_restores_it(gateway, http, make_org, stack, booking):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)

    # No row yet: active, on SUBSCRIPTION_DEFAULT_PLAN (starter), nothing paused or resumed.
    initial = await status(http, url, headers)
    assert initial == {
        "status": "active",
        "pause_reason_code": None,
        "paused_at": None,
        "resume_reason_code": None,
        "resumed_at": None,
        "plan": {
            "code": "starter",
            "name": "Starter",
            "limits": {"workers": 10, "bookings_per_month": 300, "storage_bytes": 25 * 1024**3},
            "monthly_price_cents": 4900,
            "currency": "CAD",
        },
    }
    kept = await create_booking(http, url, headers)
    inactive = (await new_worker(http, url, headers)).json()
    deactivated = await http.patch(
        f"{url}/v1/admin/workers/{inactive['id']}", headers=headers, json={"active": False}
    )
    assert deactivated.status_code == 200, deactivated.text

    paused = await act(http, url, headers, "pause", "seasonal_break")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["status"], body["pause_reason_code"], body["plan"]) == (
        "paused",
        "seasonal_break",
        initial["plan"],
    )
    assert body["paused_at"] and body["resume_reason_code"] is None and body["resumed_at"] is None
    assert await status(http, url, headers) == body
    assert_problem(await act(http, url, headers, "pause", "again"), 409, "already_paused")
    # Announced through billing's outbox, once, with the pause's own time (as superuser: the outbox
    # is billing's table, read here across RLS).
    rows = await sql(
        stack.admin_url,
        "SELECT payload FROM billing.event_outbox WHERE subject = 'cws.billing.subscription.paused' AND org_id = %s",
        (uuid.UUID(org.org_id),),
    )
    [announced] = [billing_events.SubscriptionChanged.FromString(bytes(payload)) for (payload,) in rows]
    assert (announced.status, announced.reason_code, announced.plan_code) == (
        "paused",
        "seasonal_break",
        "starter",
    )
    assert announced.occurred_at.ToJsonString() == body["paused_at"]

    await refused_while_paused(http, url, headers)
    assert_paused_refusal(await new_worker(http, url, headers))
    assert_paused_refusal(
        await http.patch(f"{url}/v1/admin/workers/{inactive['id']}", headers=headers, json={"active": True})
    )
    # Reads, and writes that add nothing, go on.
    assert (await http.get(f"{url}/v1/admin/bookings/{kept['id']}", headers=headers)).status_code == 200
    assert (await http.get(f"{url}/v1/admin/bookings", headers=headers)).status_code == 200
    assert (await http.get(f"{url}/v1/admin/workers", headers=headers)).status_code == 200
    renamed = await http.patch(
        f"{url}/v1/admin/workers/{inactive['id']}", headers=headers, json={"name": "Renamed While Paused"}
    )
    assert renamed.status_code == 200, renamed.text
    confirmed = await http.post(f"{url}/v1/admin/bookings/{kept['id']}/confirm", headers=headers)
    assert confirmed.status_code == 200, confirmed.text

    resumed = await act(http, url, headers, "resume", "customer_returned")
    assert resumed.status_code == 200, resumed.text
    after = resumed.json()
    # The latest pause stays as history beside the resume; the plan never moved.
    assert (after["status"], after["resume_reason_code"], after["pause_reason_code"]) == (
        "active",
        "customer_returned",
        "seasonal_break",
    )
    assert after["paused_at"] == body["paused_at"]
    assert datetime.fromisoformat(after["resumed_at"]) > datetime.fromisoformat(after["paused_at"])
    assert after["plan"] == initial["plan"]
    assert_problem(await act(http, url, headers, "resume", "again"), 409, "not_paused")

    async def creates_again() -> bool:
        response = await new_booking(http, url, headers)
        assert response.status_code in (201, 409), response.text
        return response.status_code == 201

    await eventually(creates_again, timeout=30, message="booking hearing the resume")
    assert (await new_worker(http, url, headers)).status_code == 201
    reactivated = await http.patch(
        f"{url}/v1/admin/workers/{inactive['id']}", headers=headers, json={"active": True}
    )
    assert reactivated.status_code == 200 and reactivated.json()["active"] is True, reactivated.text


async def test_pause_and_resume_are_audited_with_before_and_after(gateway, http, make_org, stack, billing):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    assert (await act(http, url, headers, "pause", "moving_offices")).status_code == 200
    assert (await act(http, url, headers, "resume", "moved")).status_code == 200

    async def audited(action: str) -> dict[str, Any]:
        logs = await http.get(f"{url}/v1/admin/audit-logs", headers=headers, params={"action": action})
        assert logs.status_code == 200, logs.text
        found = logs.json()
        assert len(found) == 1, found  # until iam has heard billing's audit event
        return dict(found[0])

    pause = await eventually(lambda: audited("billing.PauseSubscription"))
    assert pause["role"] == "OWNER"
    assert (pause["before"]["status"], pause["after"]["status"]) == ("active", "paused")
    assert pause["after"]["pause_reason_code"] == "moving_offices" and pause["after"]["paused_at"]
    resume = await eventually(lambda: audited("billing.ResumeSubscription"))
    assert (resume["before"]["status"], resume["after"]["status"]) == ("paused", "active")
    assert resume["after"]["resume_reason_code"] == "moved"
    assert resume["after"]["pause_reason_code"] == "moving_offices"


async def test_reason_codes_are_checked(gateway, http, make_org, billing):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    too_long = assert_problem(await act(http, url, headers, "pause", "x" * 65), 422)
    assert [e["field"] for e in too_long["errors"]] == ["reason_code"], too_long
    assert "64" in too_long["errors"][0]["message"], too_long
    for bad in ("", "   ", "tab\there"):
        assert_problem(await act(http, url, headers, "pause", bad), 422)
    missing = await http.post(f"{url}/v1/billing/pause", headers=headers, json={})
    assert_problem(missing, 422)
    extra = await http.post(
        f"{url}/v1/billing/pause", headers=headers, json={"reason_code": "a", "org_id": "x"}
    )
    assert_problem(extra, 422)
    assert (await status(http, url, headers))["status"] == "active"
    exactly = await act(http, url, headers, "pause", "y" * 64)
    assert exactly.status_code == 200 and exactly.json()["pause_reason_code"] == "y" * 64, exactly.text
    assert_problem(await act(http, url, headers, "resume", "z" * 65), 422)


async def test_roles_and_orgs(gateway, http, make_org, billing, booking):
    url = gateway.url
    org, other = await make_org(), await make_org()
    headers = await owner(http, url, org)
    for role in ("VIEWER", "DISPATCHER"):
        refused = await staff(http, url, headers, role)
        assert_problem(await http.get(f"{url}/v1/billing/status", headers=refused), 403)
        assert_problem(await act(http, url, refused, "pause", "nope"), 403)
        assert_problem(await act(http, url, refused, "resume", "nope"), 403)
        # The plans are for every staff role.
        assert (await http.get(f"{url}/v1/billing/plans", headers=refused)).status_code == 200
    assert_problem(await http.get(f"{url}/v1/billing/status"), 401)

    finance = await staff(http, url, headers, "FINANCE")
    paused = await act(http, url, finance, "pause", "finance_hold")
    assert paused.status_code == 200, paused.text
    assert (await status(http, url, finance))["status"] == "paused"
    admin = await staff(http, url, headers, "ADMIN")
    assert (await status(http, url, admin))["pause_reason_code"] == "finance_hold"

    # Another org: its own status (active), untouched by this org's pause; it cannot reach this org's.
    theirs = await owner(http, url, other)
    assert (await status(http, url, theirs))["status"] == "active"
    await refused_while_paused(http, url, headers)
    assert (await new_booking(http, url, theirs)).status_code == 201
    assert (await new_worker(http, url, theirs)).status_code == 201
    assert_problem(await act(http, url, theirs, "resume", "not_mine"), 409, "not_paused")
    assert (await status(http, url, headers))["status"] == "paused"

    resumed = await act(http, url, finance, "resume", "cleared")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active", resumed.text


async def test_plans_and_changing_plan(gateway, http, make_org, billing):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    plans = await http.get(f"{url}/v1/billing/plans", headers=headers)
    assert plans.status_code == 200, plans.text
    listed = plans.json()
    assert listed["default_plan_code"] == "starter"
    assert [p["code"] for p in listed["items"]] == ["free", "starter", "pro"]
    assert listed["items"][0]["limits"] == {"workers": 2, "bookings_per_month": 30, "storage_bytes": 1024**3}

    for role in ("ADMIN", "FINANCE"):
        refused = await staff(http, url, headers, role)
        assert_problem(
            await http.put(f"{url}/v1/billing/plan", headers=refused, json={"plan_code": "pro"}), 403
        )
    unknown = await http.put(f"{url}/v1/billing/plan", headers=headers, json={"plan_code": "platinum"})
    assert [e["field"] for e in assert_problem(unknown, 422)["errors"]] == ["plan_code"]
    assert_problem(await http.put(f"{url}/v1/billing/plan", headers=headers, json={"plan_code": ""}), 422)

    assert (await act(http, url, headers, "pause", "upgrade_later")).status_code == 200
    changed = await http.put(f"{url}/v1/billing/plan", headers=headers, json={"plan_code": "pro"})
    assert changed.status_code == 200, changed.text
    # A plan change keeps the status (and the pause's fields).
    assert (changed.json()["plan"]["code"], changed.json()["status"]) == ("pro", "paused")
    assert changed.json()["pause_reason_code"] == "upgrade_later"
    assert (await status(http, url, headers))["plan"]["limits"]["workers"] == 50


async def test_while_paused_leads_come_in_but_become_no_booking(gateway, http, make_org, billing, booking):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    keyed = {**BOOKING, "starts_at": slot(96)}
    key = {**headers, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    first = await http.post(f"{url}/v1/admin/bookings", headers=key, json=keyed)
    assert first.status_code == 201, first.text

    assert (await act(http, url, headers, "pause", "winter")).status_code == 200
    await refused_while_paused(http, url, headers)
    # The public form still takes leads (a lead grants nothing); booking one is refused.
    lead = await http.post(
        f"{url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": "Paused Lead",
            "phone": "780-555-0000",
            "email": "lead@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
    )
    assert lead.status_code == 201, lead.text
    from_lead = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={"lead_id": lead.json()["lead_id"], "starts_at": slot(120), "duration_minutes": 120},
    )
    assert_paused_refusal(from_lead)
    # The same keyed request as before the pause creates nothing: it gets its booking back.
    replayed = await http.post(f"{url}/v1/admin/bookings", headers=key, json=keyed)
    assert replayed.status_code == 201 and replayed.json()["id"] == first.json()["id"], replayed.text
    assert replayed.headers.get("Idempotent-Replayed") == "true"


async def test_two_pauses_at_once_one_wins(gateway, http, make_org, billing):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    answers = await asyncio.gather(*(act(http, url, headers, "pause", f"race_{n}") for n in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "already_paused")
