"""GET /v1/admin/clients (issue 16): another org's clients never appear, every staff role reads,
paging and search at the edge, and bad input is a 422 naming the field. What the rows hold (grouping,
counts, upcoming, LIKE escaping) is services/booking/tests/test_clients.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.testkit import assert_problem, owner, staff


def slot(hours_from_now: float) -> str:
    return (datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours_from_now)).isoformat()


async def create_booking(http: Any, url: str, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {
        "starts_at": slot(48),
        "duration_minutes": 120,
        "client_name": "Casey Client",
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
        **fields,
    }
    response = await http.post(f"{url}/v1/admin/bookings", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def unique(local: str) -> str:
    return f"{local}-{uuid.uuid4().hex[:8]}@example.com"


async def listed(http: Any, url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await http.get(f"{url}/v1/admin/clients", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_org_b_sees_none_of_org_a_clients(gateway, http, make_org):
    a, b = await make_org(), await make_org()
    owner_a, owner_b = await owner(http, gateway.url, a), await owner(http, gateway.url, b)
    shared, only_a = unique("shared"), unique("only-a")
    await create_booking(http, gateway.url, owner_a, client_email=shared, client_name="Shared At A")
    await create_booking(http, gateway.url, owner_a, client_email=only_a, client_name="Only A")
    await create_booking(http, gateway.url, owner_b, client_email=shared, client_name="Shared At B")

    of_a = await listed(http, gateway.url, owner_a)
    assert {c["email"] for c in of_a["clients"]} == {shared, only_a} and of_a["total"] == 2
    # The same person is a client of both orgs: each org counts only its own booking and name.
    for role in ("OWNER", "VIEWER"):
        headers = owner_b if role == "OWNER" else await staff(http, gateway.url, owner_b, role)
        of_b = await listed(http, gateway.url, headers)
        assert of_b["total"] == 1, of_b
        (client,) = of_b["clients"]
        assert client["email"] == shared and client["name"] == "Shared At B" and client["bookings"] == 1
        assert await listed(http, gateway.url, headers, q=only_a) == {"clients": [], "total": 0}
        assert await listed(http, gateway.url, headers, q="Only A") == {"clients": [], "total": 0}


async def test_paging_and_search(gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    tag = uuid.uuid4().hex[:6]
    emails = [f"{name}.{tag}@example.com" for name in ("ann", "bob", "cat")]
    for hours, email in zip((24, 48, 72), emails, strict=True):
        await create_booking(
            http,
            gateway.url,
            headers,
            client_email=email,
            client_name=email.split(".")[0].title(),
            starts_at=slot(hours),
        )

    first = await listed(http, gateway.url, headers, limit=2)
    second = await listed(http, gateway.url, headers, limit=2, offset=2)
    assert first["total"] == second["total"] == 3
    assert [c["email"] for c in first["clients"] + second["clients"]] == list(reversed(emails))
    default = await listed(http, gateway.url, headers)
    assert len(default["clients"]) == 3

    by_name = await listed(http, gateway.url, headers, q="BOB")
    assert [c["email"] for c in by_name["clients"]] == [emails[1]] and by_name["total"] == 1
    by_email = await listed(http, gateway.url, headers, q=f"at.{tag}")
    assert [c["email"] for c in by_email["clients"]] == [emails[2]]
    client = by_email["clients"][0]
    assert client.keys() == {
        "email",
        "name",
        "phone",
        "bookings",
        "first_booking_at",
        "last_booking_at",
        "upcoming_bookings",
    }
    assert client["bookings"] == client["upcoming_bookings"] == 1


async def test_bad_input_is_422_naming_the_field_and_signing_in_is_required(gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    cases = [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"q": "x" * 201}, "q"),
    ]
    for params, field in cases:
        response = await http.get(f"{gateway.url}/v1/admin/clients", headers=headers, params=params)
        problem = assert_problem(response, 422)
        assert field in {e["field"].split(".")[-1] for e in problem["errors"]}, (params, problem)
    assert_problem(await http.get(f"{gateway.url}/v1/admin/clients"), 401)
