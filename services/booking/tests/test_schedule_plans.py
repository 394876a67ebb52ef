"""Every schedule query is index-driven under row-level security (issue 15).

Two orgs share one calendar period; the other org has many times more blocks. Each schedule
query the service runs (suggestions, conflicts in their four shapes, blackouts in a window, the
"has upcoming assignments" check) is captured as it runs as the runtime role in a unit of work with
the org context set, then explained (EXPLAIN (ANALYZE, FORMAT JSON)) with the same parameters in the
same transaction. A sequential scan of schedule_blocks or bookings fails the test, and so does a
scan of schedule_blocks that reads many more rows than the org's own blocks in the window (an index
used for org_id alone, the other filters applied row by row, as `period && window` would be under
RLS: the range operator is not leakproof)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from libs.common.db import Database, UnitOfWork, unit_of_work
from services.booking import resources, scheduling
from services.booking.models import SCHEMA, event_tables, schedule_blocks
from services.booking.resources import Window
from tools.bench.seed import seed
from tools.testkit import explained

# The module's first test seeds both calendars (about 70,000 blocks) for all of them.
pytestmark = pytest.mark.timeout(300)

START = datetime(2033, 5, 2, tzinfo=UTC)
BIG_TABLES = ("schedule_blocks", "bookings", "workers")
# A window of a few hours reads the org's blocks of about a day (short blocks start at most 24 h
# before it); the other org has tens of thousands in the same period.
MAX_BLOCK_ROWS_READ = 500


@dataclass(frozen=True)
class Calendars:
    mine: str
    other: str
    team_id: uuid.UUID
    worker_id: uuid.UUID
    booking_id: uuid.UUID
    # The booking's start: team and worker windows are around it.
    booked_at: datetime
    blocks_of_mine: int
    blocks_of_other: int


@pytest.fixture(scope="module")
def calendars(stack: Any) -> Calendars:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    # Same days for both: only org_id tells their blocks apart.
    seed(stack.admin_url, other, workers=600, teams=60, bookings=20_000, start=START)
    seed(stack.admin_url, mine, workers=40, teams=4, bookings=2_000, start=START)
    day = START + timedelta(days=10)
    with psycopg.connect(stack.admin_url) as conn:
        team_id, booking_id, booked_at = conn.execute(
            "SELECT team_id, booking_id, starts_at FROM booking.schedule_blocks "
            "WHERE org_id = %s AND team_id IS NOT NULL AND kind = 'booking' AND starts_at >= %s "
            "ORDER BY starts_at LIMIT 1",
            (mine, day),
        ).fetchone()  # type: ignore[misc]
        (worker_id,) = conn.execute(
            "SELECT worker_id FROM booking.schedule_blocks WHERE booking_id = %s AND worker_id IS NOT NULL LIMIT 1",
            (booking_id,),
        ).fetchone()  # type: ignore[misc]
        # A long (multi-day) blackout too, of a worker of its own, so the long-span branch has a row.
        (holiday,) = conn.execute(
            "INSERT INTO booking.workers (id, org_id, name) VALUES (gen_random_uuid(), %s, 'Zed') RETURNING id",
            (mine,),
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO booking.schedule_blocks (id, org_id, kind, worker_id, period, reason) "
            "VALUES (gen_random_uuid(), %s, 'blackout', %s, tstzrange(%s, %s), 'holiday')",
            (mine, holiday, START - timedelta(days=40), START + timedelta(days=40)),
        )
        counts = dict(
            conn.execute(
                "SELECT org_id::text, count(*) FROM booking.schedule_blocks WHERE org_id::text = ANY(%s) GROUP BY org_id",
                ([mine, other],),
            ).fetchall()
        )
        conn.execute("ANALYZE booking.schedule_blocks")
    return Calendars(mine, other, team_id, worker_id, booking_id, booked_at, counts[mine], counts[other])


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    try:
        yield database
    finally:
        await database.dispose()


def problems_of(plans: list[Any]) -> list[str]:
    problems = []
    for statement, nodes in plans:
        for node in nodes:
            table = node.get("Relation Name")
            if table in BIG_TABLES and node["Node Type"] == "Seq Scan":
                problems.append(f"Seq Scan on {table} in: {statement[:300]}")
            if table == "schedule_blocks" and "Scan" in node["Node Type"]:
                read = (
                    node.get("Actual Rows", 0)
                    + node.get("Rows Removed by Filter", 0)
                    + node.get("Rows Removed by Index Recheck", 0)
                ) * node.get("Actual Loops", 1)
                if read > MAX_BLOCK_ROWS_READ:
                    problems.append(
                        f"{node['Node Type']} read {read} schedule_blocks rows in: {statement[:300]}"
                    )
    return problems


def window(hours_from: int, hours: int = 3) -> Window:
    start = START + timedelta(days=10, hours=hours_from)
    return Window(start, start + timedelta(hours=hours))


def around(c: Calendars) -> Window:
    """Two hours each side of the org's booking."""
    return Window(c.booked_at - timedelta(hours=2), c.booked_at + timedelta(hours=2))


QUERIES: dict[str, Callable[[Calendars], Callable[[UnitOfWork], Awaitable[Any]]]] = {
    "suggestions": lambda c: lambda uow: scheduling.suggestions(uow, window(9), skill_tags=[]),
    "suggestions, tags, a page further": lambda c: (
        lambda uow: scheduling.suggestions(uow, window(13), skill_tags=["deep"], limit=50, offset=50)
    ),
    "suggestions planning a booking": lambda c: (
        lambda uow: scheduling.suggestions(
            uow, window(9), skill_tags=[], booking_id=str(c.booking_id), limit=50
        )
    ),
    "conflicts, all": lambda c: lambda uow: scheduling.conflicts(uow, window(9)),
    "conflicts, a team": lambda c: lambda uow: scheduling.conflicts(uow, around(c), team_id=str(c.team_id)),
    "conflicts, a worker": lambda c: (
        lambda uow: scheduling.conflicts(uow, around(c), worker_id=str(c.worker_id))
    ),
    "conflicts, a booking's own": lambda c: (
        lambda uow: scheduling.conflicts(
            uow,
            Window(c.booked_at + timedelta(days=1), c.booked_at + timedelta(days=1, hours=3)),
            booking_id=str(c.booking_id),
        )
    ),
    "blackouts in a window": lambda c: (
        lambda uow: resources.list_blackouts(uow, window(0).starts_at, window(0, 48).ends_at)
    ),
    "worker has upcoming assignments": lambda c: (
        lambda uow: resources._refuse_if_assigned(uow, schedule_blocks.c.worker_id, uuid.uuid4(), "worker")
    ),
}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_schedule_queries_are_index_driven_under_rls(name, calendars, db):
    assert calendars.blocks_of_other > 5 * calendars.blocks_of_mine > 20 * MAX_BLOCK_ROWS_READ
    plans = await explained(db, calendars.mine, QUERIES[name](calendars))
    assert any(node.get("Relation Name") == "schedule_blocks" for _, nodes in plans for node in nodes)
    assert problems_of(plans) == []


async def test_the_queries_find_the_orgs_blocks(calendars, db):
    """The plans above are of queries that do find rows: the org's busy team, worker and blackouts."""
    async with unit_of_work(db, calendars.mine) as uow:
        busy = await scheduling.conflicts(uow, around(calendars), team_id=str(calendars.team_id))
        worker = await scheduling.conflicts(uow, around(calendars), worker_id=str(calendars.worker_id))
        every = await scheduling.conflicts(uow, window(9))
        long = await resources.list_blackouts(uow, window(0).starts_at, window(0).ends_at)
    assert any(c.reference_id == calendars.booking_id for c in busy)
    assert any(c.reference_id == calendars.booking_id for c in worker)
    assert every and any(c.kind == "worker_blackout" and c.note == "holiday" for c in every)
    assert [b.reason for b in long if b.reason == "holiday"] == ["holiday"]
