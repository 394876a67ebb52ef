"""Analytics v1 at the gateway: NPS distribution and trends, cohorts, who may see them.

Known data, exact answers. Times are placed by hand (as superuser) either side of local week and
month boundaries, so grouping in the org's time zone is what the numbers prove."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from services.booking.tests.helpers import applied_profile, create_booking
from services.booking.tests.test_nps import completed_booking
from tools import testkit
from tools.testkit import assert_clean, assert_problem, sql


async def org_in(stack: Any, make_org: Any, time_zone: str) -> Any:
    """A new org whose booking profile is in `time_zone`.

    The time zone is set only after booking has applied the org's cws.iam.org.created event (the
    profile then carries the org's name), so that event cannot overwrite it afterwards."""
    name = f"Zoned {uuid.uuid4().hex[:8]}"
    org = await make_org(name)
    await applied_profile(stack, org.org_id)
    await sql(
        stack.admin_url,
        "UPDATE booking.org_profiles SET time_zone = %s WHERE org_id = %s",
        (time_zone, org.org_id),
    )
    return org


# (score, when the answer arrived, UTC). The org is in America/Edmonton (UTC-7 in winter).
ANSWERS = [
    (10, "2025-01-06T12:00:00Z"),  # Mon, 2025-W02, January
    (10, "2025-01-07T12:00:00Z"),  # 2025-W02
    (9, "2025-01-13T06:00:00Z"),  # UTC Monday of W03, but Sunday 23:00 local: 2025-W02
    (9, "2025-01-13T12:00:00Z"),  # 2025-W03
    (8, "2025-01-13T15:00:00Z"),  # 2025-W03
    (7, "2025-02-01T03:00:00Z"),  # UTC February, but Jan 31 20:00 local: 2025-W05, January
    (6, "2025-02-03T12:00:00Z"),  # 2025-W06, February
    (0, "2025-02-03T13:00:00Z"),  # 2025-W06
    (10, "2024-12-31T12:00:00Z"),  # before the window
    (1, "2025-03-01T07:30:00Z"),  # after the window (local 2025-03-01 00:30)
]
WINDOW = {"from": "2025-01-01T00:00:00-07:00", "to": "2025-03-01T00:00:00-07:00"}


async def test_nps_distribution_and_trends_are_exact_in_the_org_time_zone(gateway, http, make_org, stack):
    url = gateway.url
    org = await org_in(stack, make_org, "America/Edmonton")
    owner = await testkit.owner(http, url, org)
    bookings = await asyncio.gather(*(completed_booking(http, url, owner) for _ in ANSWERS))
    for booking, (score, _) in zip(bookings, ANSWERS, strict=True):
        answer = await http.post(
            f"{url}/v1/public/nps/{booking['nps_token']}",
            json={"score": score, "comment": f"secret remark {score}"},
        )
        assert answer.status_code == 201, answer.text
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        for booking, (_, at) in zip(bookings, ANSWERS, strict=True):
            conn.execute(
                "UPDATE booking.nps_responses SET created_at = %s WHERE booking_id = %s", (at, booking["id"])
            )
    # Another org's answers never count here.
    other = await make_org()
    other_owner = await testkit.owner(http, url, other)
    stray = await completed_booking(http, url, other_owner)
    await http.post(f"{url}/v1/public/nps/{stray['nps_token']}", json={"score": 0})
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE booking.nps_responses SET created_at = '2025-01-08T12:00:00Z' WHERE booking_id = %s",
            (stray["id"],),
        )

    response = await http.get(f"{url}/v1/admin/analytics/nps", params=WINDOW, headers=owner)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "responses": 8,
        "promoters": 4,
        "passives": 2,
        "detractors": 2,
        "promoters_pct": 50.0,
        "passives_pct": 25.0,
        "detractors_pct": 25.0,
        "nps": 25.0,
        "weekly": [
            {"period": "2025-W02", "responses": 3, "average_score": 9.67},
            {"period": "2025-W03", "responses": 2, "average_score": 8.5},
            {"period": "2025-W05", "responses": 1, "average_score": 7.0},
            {"period": "2025-W06", "responses": 2, "average_score": 3.0},
        ],
        "monthly": [
            {"period": "2025-01", "responses": 6, "average_score": 8.83},
            {"period": "2025-02", "responses": 2, "average_score": 3.0},
        ],
    }
    # Aggregates only: no comment, email or name.
    assert "remark" not in response.text and "@" not in response.text

    # The default window is the last year: none of these 2025 answers falls in it.
    recent = await http.get(f"{url}/v1/admin/analytics/nps", headers=owner)
    assert recent.status_code == 200 and recent.json()["responses"] == 0 and recent.json()["nps"] == 0.0


async def test_nps_window_errors_are_422(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    nps = f"{gateway.url}/v1/admin/analytics/nps"
    for params in (
        {"from": "2025-03-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},  # ends before it starts
        {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},  # empty
        {"from": "2020-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},  # more than two years
        {"from": "2025-01-01T00:00:00"},  # no offset: ambiguous
        {"to": "yesterday"},
    ):
        assert_problem(await http.get(nps, params=params, headers=owner), 422)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def months_back(start: datetime, count: int) -> datetime:
    for _ in range(count):
        start = month_start(start - timedelta(days=1))
    return start


def insert_bookings(stack: Any, org_id: str, rows: list[tuple[str, datetime, str]]) -> None:
    with psycopg.connect(stack.admin_url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO booking.bookings (id, org_id, status, starts_at, ends_at, client_name, client_email,"
            " cleaning_type, beds, baths, total_before_tax_cents, currency)"
            " VALUES (gen_random_uuid(), %s, %s, %s, %s + interval '2 hours', 'C', %s, 'standard', 1, 1, 10000, 'CAD')",
            [(org_id, status, starts, starts, email) for email, starts, status in rows],
        )


async def test_cohorts_by_first_booking_month_in_the_org_time_zone(gateway, http, make_org, stack):
    tokyo = ZoneInfo("Asia/Tokyo")  # UTC+9, no DST
    org = await org_in(stack, make_org, "Asia/Tokyo")
    owner = await testkit.owner(http, gateway.url, org)
    this_month = month_start(datetime.now(tokyo))
    last_month, two_ago, long_ago = (
        months_back(this_month, 1),
        months_back(this_month, 2),
        months_back(this_month, 5),
    )
    noon = timedelta(days=2, hours=12)
    dave_first = last_month + timedelta(hours=5)
    assert dave_first.astimezone(UTC).month == two_ago.month  # the local/UTC month line runs between
    insert_bookings(
        stack,
        org.org_id,
        [
            # alice: first two months ago, again last month (one extra cancelled): repeat
            ("Alice@Example.com", two_ago + noon, "completed"),
            ("alice@example.com", two_ago + noon + timedelta(days=3), "cancelled"),
            ("alice@example.com", last_month + noon, "confirmed"),
            # bob: once, two months ago
            ("bob@example.com", two_ago + noon, "completed"),
            # carol: her first booking was cancelled, so she starts last month; once only
            ("carol@example.com", two_ago + noon, "cancelled"),
            ("carol@example.com", last_month + noon, "completed"),
            # dave: 05:00 local on the 1st of last month is still the month before in UTC (20:00 on
            # its last day); his cohort is last month, and he came back this month: repeat
            ("dave@example.com", dave_first, "completed"),
            ("dave@example.com", this_month + noon, "pending"),
            # gina: once last month
            ("gina@example.com", last_month + noon, "completed"),
            # erin: first five months ago, outside a 3-month window; counted in no listed cohort
            ("erin@example.com", long_ago + noon, "completed"),
            ("erin@example.com", this_month + noon, "confirmed"),
            # frank: this month only
            ("frank@example.com", this_month + timedelta(hours=1), "confirmed"),
            # no email: not a customer one can follow
            ("", last_month + noon, "completed"),
        ],
    )
    response = await http.get(
        f"{gateway.url}/v1/admin/analytics/cohorts", params={"months": 3}, headers=owner
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "months": 3,
        "cohorts": [
            {"month": two_ago.strftime("%Y-%m"), "customers": 2, "repeat_customers": 1, "repeat_rate": 0.5},
            {
                "month": last_month.strftime("%Y-%m"),
                "customers": 3,
                "repeat_customers": 1,
                "repeat_rate": 0.3333,
            },
            {
                "month": this_month.strftime("%Y-%m"),
                "customers": 1,
                "repeat_customers": 0,
                "repeat_rate": 0.0,
            },
        ],
    }
    assert "@" not in response.text

    # Twelve months by default, empty months listed with zeros; erin appears once the window reaches her.
    default = (await http.get(f"{gateway.url}/v1/admin/analytics/cohorts", headers=owner)).json()
    assert default["months"] == 12 and len(default["cohorts"]) == 12
    by_month = {c["month"]: c for c in default["cohorts"]}
    assert by_month[long_ago.strftime("%Y-%m")] == {
        "month": long_ago.strftime("%Y-%m"),
        "customers": 1,
        "repeat_customers": 1,
        "repeat_rate": 1.0,
    }
    assert sum(c["customers"] for c in default["cohorts"]) == 7

    for months in (0, 61, "x"):
        assert_problem(
            await http.get(
                f"{gateway.url}/v1/admin/analytics/cohorts", params={"months": months}, headers=owner
            ),
            422,
        )


async def test_only_owner_admin_and_finance_see_analytics(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    await create_booking(http, url, owner, client_email="someone@example.com")
    paths = ("/v1/admin/analytics/nps", "/v1/admin/analytics/cohorts")
    for role, allowed in (("ADMIN", True), ("FINANCE", True), ("DISPATCHER", False), ("VIEWER", False)):
        headers = await testkit.staff(http, url, owner, role)
        for path in paths:
            response = await http.get(url + path, headers=headers)
            if allowed:
                assert response.status_code == 200, (role, path, response.text)
                assert_clean(response)
            else:
                assert_problem(response, 403, "forbidden_role")
    for path in paths:
        assert_problem(await http.get(url + path), 401)
        assert (await http.get(url + path, headers=owner)).status_code == 200
    # An empty org answers zeros, not errors.
    empty = (await http.get(url + paths[0], headers=owner)).json()
    assert empty["responses"] == 0 and empty["weekly"] == [] and empty["monthly"] == []
    cohorts = (await http.get(url + paths[1], headers=owner)).json()["cohorts"]
    assert cohorts[-1]["customers"] == 1 and sum(c["customers"] for c in cohorts) == 1
