"""NPS surveys at the gateway: a completed booking's one-use token, scored once, publicly."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg

from services.booking.tests.helpers import create_booking
from tools import testkit
from tools.testkit import assert_clean, assert_problem


async def completed_booking(http: Any, url: str, owner: dict[str, str], **fields: Any) -> dict[str, Any]:
    booking = await create_booking(http, url, owner, **fields)
    for action in ("confirm", "complete"):
        response = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/{action}", headers=owner)
        assert response.status_code == 200, response.text
    assert response.json()["nps_token"].startswith("nps.")
    return response.json()  # type: ignore[no-any-return]


async def test_survey_is_answered_once(gateway, http, make_org, stack):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    booking = await completed_booking(http, gateway.url, owner)
    token = booking["nps_token"]
    url = f"{gateway.url}/v1/public/nps/{token}"

    first = await http.post(url, json={"score": 9, "comment": "  Spotless, thank you!  "})
    assert first.status_code == 201 and first.json() == {"status": "recorded"}, first.text
    assert first.headers["cache-control"] == "no-store"
    assert_problem(await http.post(url, json={"score": 3}), 409, "survey_used")
    with psycopg.connect(stack.admin_url) as conn:
        rows = conn.execute(
            "SELECT org_id, score, comment FROM booking.nps_responses WHERE booking_id = %s", (booking["id"],)
        ).fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [(org.org_id, 9, "Spotless, thank you!")]


async def test_concurrent_answers_of_one_survey_record_exactly_one(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    token = (await completed_booking(http, gateway.url, owner))["nps_token"]
    answers = await asyncio.gather(
        *(http.post(f"{gateway.url}/v1/public/nps/{token}", json={"score": s}) for s in (10, 0, 7, 8))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    for answer in answers:
        assert_clean(answer)


async def test_unknown_foreign_and_malformed_tokens_are_404(gateway, http, make_org):
    org, other = await make_org(), await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    token = (await completed_booking(http, gateway.url, owner))["nps_token"]
    _, _, secret_part = token.split(".")
    for bad in (
        f"nps.{org.org_id}.{uuid.uuid4().hex}",  # right org, no such survey
        f"nps.{other.org_id}.{secret_part}",  # the real secret, moved to another org
        f"nps.{uuid.uuid4()}.{secret_part}",  # an org that does not exist
        "nps.not-a-uuid.abc",
        "garbage",
    ):
        assert_problem(await http.post(f"{gateway.url}/v1/public/nps/{bad}", json={"score": 8}), 404)
    # The genuine token is still unused after all that.
    assert (await http.post(f"{gateway.url}/v1/public/nps/{token}", json={"score": 8})).status_code == 201


async def test_bad_answers_are_422_and_leave_the_survey_open(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    token = (await completed_booking(http, gateway.url, owner))["nps_token"]
    url = f"{gateway.url}/v1/public/nps/{token}"
    for body in (
        {"score": 11},
        {"score": -1},
        {"score": "ten"},
        {"score": 7.5},
        {},
        {"score": 7, "comment": "x" * 2001},
        {"score": 7, "email": "someone@example.com"},
    ):
        problem = assert_problem(await http.post(url, json=body), 422)
        assert problem["errors"], problem
    assert_problem(
        await http.post(url, content=b"{not json", headers={"Content-Type": "application/json"}), 400
    )
    assert_problem(await http.post(f"{gateway.url}/v1/public/nps/{'n' * 201}", json={"score": 5}), 422)
    longest = await http.post(url, json={"score": 0, "comment": "y" * 2000})
    assert longest.status_code == 201, longest.text
