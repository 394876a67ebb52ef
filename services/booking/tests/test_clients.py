"""ListClients (issue 16): an org's bookings grouped by lower-cased client email, with the latest
booking's name and phone, counts, first and last start, upcoming bookings, search and paging. The
gateway's edge (roles, 422, another org) is gateway/tests/test_clients_routes.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.booking.tests.helpers import create_booking, slot
from tools import testkit


def unique(local: str) -> str:
    return f"{local}-{uuid.uuid4().hex[:8]}@example.com"


async def clients(http: Any, url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await http.get(f"{url}/v1/admin/clients", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def move_to_past(stack: Any, booking_id: str, days: int) -> datetime:
    """A booking that already happened: the API refuses to create one in the past, so the test sets
    its times as superuser (bypassing RLS, on the one row it names)."""
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    await testkit.sql(
        stack.admin_url,
        "UPDATE booking.bookings SET starts_at = %s, ends_at = %s WHERE id = %s",
        (starts, starts + timedelta(hours=2), booking_id),
    )
    return starts


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_bookings_group_by_email_with_the_latest_name_counts_and_upcoming(
    gateway, http, make_org, stack
):
    org = await make_org()
    headers = await testkit.owner(http, gateway.url, org)
    casey, pat = unique("casey"), unique("pat")
    old = await create_booking(http, gateway.url, headers, client_email=casey, client_name="Casey Old")
    first_at = await move_to_past(stack, old["id"], days=30)
    cancelled = await create_booking(
        http,
        gateway.url,
        headers,
        client_email=casey.upper(),
        client_name="Casey Cancelled",
        starts_at=slot(24),
    )
    response = await http.post(
        f"{gateway.url}/v1/admin/bookings/{cancelled['id']}/cancel", headers=headers, json={}
    )
    assert response.status_code == 200, response.text
    latest_start = slot(96)
    await create_booking(
        http,
        gateway.url,
        headers,
        client_email=casey,
        client_name="Casey Newest",
        client_phone="780-555-0101",
        starts_at=latest_start,
    )
    await create_booking(http, gateway.url, headers, client_email=pat, client_name="Pat", starts_at=slot(48))
    await create_booking(
        http, gateway.url, headers, client_email="", client_name="Walk In", starts_at=slot(30)
    )

    body = await clients(http, gateway.url, headers)
    assert body["total"] == 2  # the booking without an email is no client
    first, second = body["clients"]
    assert first["email"] == casey  # its last booking (in 96 h) is the latest
    assert first["name"] == "Casey Newest" and first["phone"] == "+17805550101"
    assert first["bookings"] == 3
    assert at(first["first_booking_at"]) == first_at
    assert at(first["last_booking_at"]) == at(latest_start)
    assert first["upcoming_bookings"] == 1  # the past one and the cancelled one are not upcoming
    assert second["email"] == pat and second["bookings"] == 1 and second["upcoming_bookings"] == 1


async def test_search_is_a_case_insensitive_substring_with_like_wildcards_taken_literally(
    gateway, http, make_org
):
    org = await make_org()
    headers = await testkit.owner(http, gateway.url, org)
    tag = uuid.uuid4().hex[:6]
    await create_booking(
        http, gateway.url, headers, client_email=f"under_score.{tag}@example.com", client_name="U"
    )
    await create_booking(
        http, gateway.url, headers, client_email=f"underxscore.{tag}@example.com", client_name="X"
    )
    await create_booking(
        http, gateway.url, headers, client_email=f"robin.{tag}@example.com", client_name="Robin 100% Shine"
    )

    def emails(body: dict[str, Any]) -> set[str]:
        return {item["email"] for item in body["clients"]}

    assert emails(await clients(http, gateway.url, headers, q="UNDER_")) == {f"under_score.{tag}@example.com"}
    assert emails(await clients(http, gateway.url, headers, q="%")) == {f"robin.{tag}@example.com"}
    assert emails(await clients(http, gateway.url, headers, q="shine")) == {f"robin.{tag}@example.com"}
    found = await clients(http, gateway.url, headers, q=tag)
    assert found["total"] == 3 and len(found["clients"]) == 3
    assert (await clients(http, gateway.url, headers, q="nobody-" + tag)) == {"clients": [], "total": 0}
    assert (await clients(http, gateway.url, headers, q="\\"))["total"] == 0


async def test_pages_follow_last_booking_then_email_and_total_counts_every_client(gateway, http, make_org):
    org = await make_org()
    headers = await testkit.owner(http, gateway.url, org)
    made = []
    for hours in (24, 48, 72, 96, 120):
        email = unique(f"c{hours}")
        await create_booking(http, gateway.url, headers, client_email=email, starts_at=slot(hours))
        made.append(email)
    expected = list(reversed(made))
    seen = []
    for offset in (0, 2, 4):
        body = await clients(http, gateway.url, headers, limit=2, offset=offset)
        assert body["total"] == 5
        seen += [item["email"] for item in body["clients"]]
    assert seen == expected
    beyond = await clients(http, gateway.url, headers, limit=2, offset=10)
    assert beyond == {"clients": [], "total": 5}
