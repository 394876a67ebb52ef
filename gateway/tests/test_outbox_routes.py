"""The outbox's operator routes over HTTP (seed 002 "Outbox delivery + DLQ", seed 003 "Dead Letter Queue
Check", seed 004 "Jobs / Scheduler"): the gateway in front of the real notify, owners and viewers
signed in for real. Dead rows are written as the superuser: quicker than failing a delivery."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tools.testkit import assert_clean, assert_problem, owner, staff


async def dead_row(
    stack: Any,
    org_id: str,
    *,
    kind: str = "email",
    to: str = "",
    minutes_ago: float = 1,
    letter: bool = False,
) -> tuple[str, str | None]:
    """A dead outbox row (and, for an export, its export dead letter): (outbox id, dead letter id)."""
    outbox_id, letter_id = str(uuid.uuid4()), str(uuid.uuid4()) if letter else None
    to = to or f"client-{uuid.uuid4().hex[:10]}@example.com"
    payload = (
        {"to": to, "subject": "Your booking", "text": "See you soon.", "email_type": "test"}
        if kind == "email"
        else {"type": "lead.created", "data": {"lead_id": outbox_id}}
    )
    target = to if kind == "email" else "hooks.example.com"
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, attempts,"
            " last_error, dead_reason, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'dead', 8,"
            " 'SMTP 451 try later', 'retries_exhausted', now() - make_interval(secs => %s))",
            (outbox_id, org_id, kind, f"test:{outbox_id}", json.dumps(payload), target, minutes_ago * 60),
        )
        if letter_id:
            await conn.execute(
                "INSERT INTO notify.export_events (id, org_id, outbox_id, target, payload, last_error, attempts)"
                " VALUES (%s, %s, %s, %s, %s, 'webhook answered 500', 8)",
                (letter_id, org_id, outbox_id, target, json.dumps(payload)),
            )
    return outbox_id, letter_id


async def test_outbox_dead_letters_list_and_replay(gateway, http, make_org, stack, smtp_sink):
    org = await make_org("Outbox Org")
    headers = await owner(http, gateway.url, org)
    to = f"client-{uuid.uuid4().hex[:10]}@example.com"
    older, _ = await dead_row(stack, org.org_id, minutes_ago=10)
    newer, _ = await dead_row(stack, org.org_id, to=to, minutes_ago=5)

    listed = await http.get(f"{gateway.url}/v1/admin/outbox/dead-letter", headers=headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [item["id"] for item in body] == [newer, older]
    assert body[0] == {
        "id": newer,
        "kind": "email",
        "dedupe_key": f"test:{newer}",
        "status": "dead",
        "attempts": 8,
        "last_error": "SMTP 451 try later",
        "target": to,
        "created_at": body[0]["created_at"],
        "updated_at": body[0]["updated_at"],
        "next_attempt_at": body[0]["next_attempt_at"],
    }
    assert body[0]["updated_at"].endswith("Z") and "T" in body[0]["updated_at"]
    one = await http.get(f"{gateway.url}/v1/admin/outbox/dead-letter?limit=1&offset=1", headers=headers)
    assert [item["id"] for item in one.json()] == [older]
    alias = await http.get(f"{gateway.url}/v1/admin/outbox-dead-letter?limit=1", headers=headers)
    assert alias.status_code == 200 and [item["id"] for item in alias.json()] == [newer]

    replayed = await http.post(f"{gateway.url}/v1/admin/outbox/{newer}/replay", headers=headers)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["id"] == newer
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
    [received] = await smtp_sink.delivered(to)
    assert received.message_id == f"<{newer}@cws.test>"
    again = await http.post(f"{gateway.url}/v1/admin/outbox/{newer}/replay", headers=headers)
    assert_problem(again, 409, "not_dead")


async def test_export_dead_letters_list_and_replay(gateway, http, make_org, stack):
    org = await make_org("Export Org")
    headers = await owner(http, gateway.url, org)
    outbox_id, letter_id = await dead_row(stack, org.org_id, kind="export", letter=True)
    listed = await http.get(f"{gateway.url}/v1/admin/export-dead-letter?limit=1", headers=headers)
    assert listed.status_code == 200, listed.text
    [letter] = listed.json()
    assert letter["id"] == letter_id and letter["outbox_id"] == outbox_id
    assert letter["target"] == "hooks.example.com" and letter["replayed_at"] is None
    assert letter["last_error"] == "webhook answered 500" and letter["created_at"].endswith("Z")
    replayed = await http.post(
        f"{gateway.url}/v1/admin/export-dead-letter/{letter_id}/replay", headers=headers
    )
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["id"] == outbox_id and replayed.json()["kind"] == "export"
    assert (await http.get(f"{gateway.url}/v1/admin/export-dead-letter", headers=headers)).json() == []


async def test_the_dlq_queue_gives_both_counts_and_pages_in_sql(gateway, http, make_org, stack):
    org = await make_org("Queue Org")
    headers = await owner(http, gateway.url, org)
    empty = await http.get(f"{gateway.url}/v1/admin/queue/dlq?kind=all&limit=1", headers=headers)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "items": [],
        "outbox_dead_count": 0,
        "export_dead_count": 0,
        "total": 0,
        "limit": 1,
        "offset": 0,
    }
    email_id, _ = await dead_row(stack, org.org_id, minutes_ago=10)
    export_id, letter_id = await dead_row(stack, org.org_id, kind="export", minutes_ago=5, letter=True)
    full = (await http.get(f"{gateway.url}/v1/admin/queue/dlq", headers=headers)).json()
    assert (full["outbox_dead_count"], full["export_dead_count"], full["total"]) == (2, 1, 3)
    assert [(i["kind"], i["id"]) for i in full["items"]] == [
        ("export", letter_id),
        ("outbox", export_id),
        ("outbox", email_id),
    ]
    assert full["items"][0] == {
        "kind": "export",
        "id": letter_id,
        "outbox_id": export_id,
        "event_kind": "export",
        "dedupe_key": f"test:{export_id}",
        "target": "hooks.example.com",
        "attempts": 8,
        "last_error": "webhook answered 500",
        "created_at": full["items"][0]["created_at"],
    }
    page = (
        await http.get(f"{gateway.url}/v1/admin/queue/dlq?kind=outbox&limit=1&offset=1", headers=headers)
    ).json()
    assert [i["id"] for i in page["items"]] == [email_id] and page["total"] == 2
    assert (page["limit"], page["offset"]) == (1, 1)
    exports = (await http.get(f"{gateway.url}/v1/admin/queue/dlq?kind=export", headers=headers)).json()
    assert [i["id"] for i in exports["items"]] == [letter_id] and exports["total"] == 1


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/admin/queue/dlq?kind=jobs", "kind"),
        ("/v1/admin/queue/dlq?limit=0", "limit"),
        ("/v1/admin/outbox/dead-letter?limit=201", "limit"),
        ("/v1/admin/export-dead-letter?offset=-1", "offset"),
    ],
)
async def test_bad_paging_and_kinds_are_422(gateway, http, make_org, path, field):
    org = await make_org("Paging Org")
    response = await http.get(f"{gateway.url}{path}", headers=await owner(http, gateway.url, org))
    body = assert_problem(response, 422)
    assert any(field in error["field"] for error in body["errors"]), body


async def test_ids_must_be_uuids_and_another_orgs_ids_are_not_found(gateway, http, make_org, stack):
    org_a, org_b = await make_org("Org A"), await make_org("Org B")
    outbox_id, letter_id = await dead_row(stack, org_a.org_id, kind="export", letter=True)
    headers_b = await owner(http, gateway.url, org_b)
    for path in ("/v1/admin/outbox/not-a-uuid/replay", "/v1/admin/export-dead-letter/42/replay"):
        body = assert_problem(await http.post(f"{gateway.url}{path}", headers=headers_b), 422)
        assert body["errors"] == [{"field": "id", "message": "must be a UUID"}]
    for path in (f"/v1/admin/outbox/{outbox_id}/replay", f"/v1/admin/export-dead-letter/{letter_id}/replay"):
        assert_problem(await http.post(f"{gateway.url}{path}", headers=headers_b), 404)
    assert (await http.get(f"{gateway.url}/v1/admin/outbox/dead-letter", headers=headers_b)).json() == []
    assert (await http.get(f"{gateway.url}/v1/admin/export-dead-letter", headers=headers_b)).json() == []
    queue = (await http.get(f"{gateway.url}/v1/admin/queue/dlq", headers=headers_b)).json()
    assert (queue["outbox_dead_count"], queue["export_dead_count"], queue["items"]) == (0, 0, [])
    # Org A's row is still dead and still its own.
    headers_a = await owner(http, gateway.url, org_a)
    assert [
        i["id"]
        for i in (await http.get(f"{gateway.url}/v1/admin/outbox/dead-letter", headers=headers_a)).json()
    ] == [outbox_id]


async def test_only_admins_see_or_replay_dead_letters(gateway, http, make_org, stack):
    org = await make_org("Roles Org")
    owner_headers = await owner(http, gateway.url, org)
    outbox_id, letter_id = await dead_row(stack, org.org_id, kind="export", letter=True)
    admin = await staff(http, gateway.url, owner_headers, "ADMIN")
    listed = await http.get(f"{gateway.url}/v1/admin/outbox/dead-letter", headers=admin)
    assert listed.status_code == 200 and [i["id"] for i in listed.json()] == [outbox_id]
    for role in ("VIEWER", "DISPATCHER"):
        headers = await staff(http, gateway.url, owner_headers, role)
        for method, path in (
            ("GET", "/v1/admin/outbox/dead-letter"),
            ("GET", "/v1/admin/export-dead-letter"),
            ("GET", "/v1/admin/queue/dlq?kind=all"),
            ("POST", f"/v1/admin/outbox/{outbox_id}/replay"),
            ("POST", f"/v1/admin/export-dead-letter/{letter_id}/replay"),
        ):
            assert_problem(
                await http.request(method, f"{gateway.url}{path}", headers=headers), 403, "forbidden_role"
            )
    anonymous = await http.get(f"{gateway.url}/v1/admin/queue/dlq")
    assert_problem(anonymous, 401)
    assert_clean(anonymous)
