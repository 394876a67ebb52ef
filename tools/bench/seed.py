"""`python -m tools.bench.seed`: bulk-load one org with teams, workers and assigned bookings, so
scheduling suggestions can be measured against a realistic calendar (issue 3: 1,000 workers and
100,000 bookings).

    python -m tools.bench.seed --org ORG_ID --workers 1000 --bookings 100000 \
        [--teams 100] [--database-url postgresql://postgres@127.0.0.1:5432/cws]

It writes with COPY as a superuser (COPY FROM refuses tables with row-level security for anyone else)
in one transaction. The exclusion constraints stay in force: the calendar is laid out so no two
blocks of one team or one worker overlap. Each team works three 4-hour slots a day (08-12, 12-16,
16-20 UTC); a slot holds at most one booking, which blocks the team and `workers_per_booking` of its
workers; some free slots carry a worker blackout instead. Teams fill their slots at random (the
`fill` share), so at any given time some teams are free and others are not.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

SLOT_START_HOURS = (8, 12, 16)
SLOT_MINUTES = 240
OFFSETS = (0, 30)
DURATIONS = (90, 120, 150, 180, 210)  # offset + duration never leaves the slot
SKILLS = ("standard", "deep", "move_out", "windows", "carpets", "pets", "eco", "supervisor")
CLEANING = (("standard", 9000, 2000, 1500), ("deep", 14000, 3000, 2500), ("move_out", 18000, 3500, 3000))
BLACKOUT_SHARE = 0.15  # of the free slots, how many carry a blackout of one worker
COPY_CHUNK_ROWS = 20_000

BOOKING_COLUMNS = (
    "id, org_id, status, starts_at, ends_at, client_name, client_email, cleaning_type, beds, baths, "
    "total_before_tax_cents, currency, team_id"
)
BLOCK_COLUMNS = "id, org_id, kind, booking_id, team_id, worker_id, period, reason"


@dataclass(frozen=True)
class SeedResult:
    org_id: str
    teams: int
    workers: int
    bookings: int
    blocks: int
    blackouts: int
    first_start: datetime
    last_end: datetime
    seconds: float

    def summary(self) -> str:
        return (
            f"seeded org {self.org_id}: {self.teams} teams, {self.workers} workers, {self.bookings} bookings, "
            f"{self.blocks} schedule blocks ({self.blackouts} blackouts), "
            f"{self.first_start:%Y-%m-%d} to {self.last_end:%Y-%m-%d}, in {self.seconds:.1f} s"
        )


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S+00")


def _period(start: datetime, end: datetime) -> str:
    return f"[{_ts(start)},{_ts(end)})"


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class _Rows:
    teams: list[str]
    workers: list[str]
    bookings: list[str]
    blocks: list[str]
    blackouts: int
    first_start: datetime
    last_end: datetime


def _layout(
    org_id: str,
    *,
    teams: int,
    workers: int,
    bookings: int,
    workers_per_booking: int,
    start: datetime,
    fill: float,
    rng: random.Random,
) -> _Rows:
    """COPY text rows for every table, on a calendar where nothing of one team or worker overlaps."""
    tag = uuid.uuid4().hex[:6]  # names stay unique per org when the seed runs twice
    team_rows: list[str] = []
    worker_rows: list[str] = []
    booking_rows: list[str] = []
    block_rows: list[str] = []
    blackouts = 0
    first_start, last_end = None, start
    booking_number = 0
    for t, (size, quota) in enumerate(zip(_split(workers, teams), _split(bookings, teams), strict=True)):
        team_id = str(uuid.uuid4())
        team_rows.append(f"{team_id}\t{org_id}\tTeam {tag}-{t:04d}")
        members = []
        for w in range(size):
            worker_id = str(uuid.uuid4())
            skills = " ".join(rng.sample(SKILLS, 2))
            worker_rows.append(
                f"{worker_id}\t{org_id}\t{team_id}\tWorker {tag}-{t:04d}-{w:02d}\t"
                f"w{tag}{t:04d}{w:02d}@example.com\t{skills}"
            )
            members.append(worker_id)
        per_booking = min(workers_per_booking, len(members))
        day, placed = 0, 0
        while placed < quota:
            for hour in SLOT_START_HOURS:
                if placed >= quota:
                    break
                slot = start + timedelta(days=day, hours=hour)
                if rng.random() >= fill:
                    if members and rng.random() < BLACKOUT_SHARE:
                        end = slot + timedelta(minutes=SLOT_MINUTES)
                        block_rows.append(
                            f"{uuid.uuid4()}\t{org_id}\tblackout\t\\N\t\\N\t{rng.choice(members)}\t"
                            f"{_period(slot, end)}\tbench blackout"
                        )
                        blackouts += 1
                    continue
                begin = slot + timedelta(minutes=rng.choice(OFFSETS))
                end = begin + timedelta(minutes=rng.choice(DURATIONS))
                first_start = begin if first_start is None or begin < first_start else first_start
                last_end = max(last_end, end)
                booking_id = str(uuid.uuid4())
                kind, base, per_bed, per_bath = rng.choice(CLEANING)
                beds, baths = rng.randint(1, 5), rng.choice((1.0, 1.5, 2.0, 2.5, 3.0))
                total = base + beds * per_bed + round(baths * per_bath)
                booking_number += 1
                booking_rows.append(
                    f"{booking_id}\t{org_id}\tconfirmed\t{_ts(begin)}\t{_ts(end)}\t"
                    f"Client {booking_number}\tclient{booking_number}@example.com\t{kind}\t{beds}\t{baths}\t"
                    f"{total}\tCAD\t{team_id}"
                )
                period = _period(begin, end)
                block_rows.append(
                    f"{uuid.uuid4()}\t{org_id}\tbooking\t{booking_id}\t{team_id}\t\\N\t{period}\t"
                )
                for j in range(per_booking):
                    worker_id = members[(placed * per_booking + j) % len(members)]
                    block_rows.append(
                        f"{uuid.uuid4()}\t{org_id}\tbooking\t{booking_id}\t\\N\t{worker_id}\t{period}\t"
                    )
                placed += 1
            day += 1
    return _Rows(team_rows, worker_rows, booking_rows, block_rows, blackouts, first_start or start, last_end)


def _chunks(rows: list[str]) -> Iterator[str]:
    for i in range(0, len(rows), COPY_CHUNK_ROWS):
        yield "\n".join(rows[i : i + COPY_CHUNK_ROWS]) + "\n"


def _copy(cur: psycopg.Cursor[object], table: str, columns: str, rows: list[str]) -> None:
    with cur.copy(f"COPY booking.{table} ({columns}) FROM STDIN") as copy:  # type: ignore[arg-type]
        for chunk in _chunks(rows):
            copy.write(chunk)


def seed(
    admin_url: str,
    org_id: str,
    *,
    workers: int = 1000,
    teams: int = 100,
    bookings: int = 100_000,
    workers_per_booking: int = 2,
    start: datetime | None = None,
    fill: float = 0.75,
    rng_seed: int = 7,
) -> SeedResult:
    """Load the org's calendar; `admin_url` must be a superuser of the suite's database."""
    org_id = str(uuid.UUID(org_id))
    if teams < 1 or workers < teams or bookings < 0 or not 0 < fill <= 1:
        raise ValueError("need teams >= 1, workers >= teams, bookings >= 0 and 0 < fill <= 1")
    started = time.perf_counter()
    start = start or (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    with psycopg.connect(admin_url) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not superuser or not superuser[0]:
            raise SystemExit("the seed writes with COPY and needs a superuser URL (RLS refuses COPY FROM)")
        rows = _layout(
            org_id,
            teams=teams,
            workers=workers,
            bookings=bookings,
            workers_per_booking=workers_per_booking,
            start=start,
            fill=fill,
            rng=random.Random(rng_seed),
        )
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
            # As pg_dump's --disable-triggers does: the foreign keys hold by construction (every
            # parent row is written first, in this transaction), and checking them row by row costs
            # more than the rest of the load. The exclusion constraints are indexes, not triggers:
            # they are checked for every row all the same.
            cur.execute("SET LOCAL session_replication_role = replica")
            _copy(cur, "teams", "id, org_id, name", rows.teams)
            _copy(cur, "workers", "id, org_id, team_id, name, email, role", rows.workers)
            _copy(cur, "bookings", BOOKING_COLUMNS, rows.bookings)
            _copy(cur, "schedule_blocks", BLOCK_COLUMNS, rows.blocks)
        conn.commit()
        conn.autocommit = True
        # Fresh statistics and a set visibility map now, rather than autovacuum in the middle of a
        # measurement later.
        for table in ("teams", "workers", "bookings", "schedule_blocks"):
            conn.execute(f"VACUUM (ANALYZE) booking.{table}")  # type: ignore[arg-type]
    return SeedResult(
        org_id=org_id,
        teams=len(rows.teams),
        workers=len(rows.workers),
        bookings=len(rows.bookings),
        blocks=len(rows.blocks),
        blackouts=rows.blackouts,
        first_start=rows.first_start,
        last_end=rows.last_end,
        seconds=time.perf_counter() - started,
    )


def _org_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--org", required=True, type=_org_id, help="the org's id (its booking profile is made on first use)"
    )
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=0, help="default: one team per 10 workers")
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--workers-per-booking", type=int, default=2)
    parser.add_argument(
        "--fill", type=float, default=0.75, help="share of a team's slots that hold a booking"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MIGRATIONS_DATABASE_URL") or os.environ.get("DATABASE_URL", ""),
        help="a superuser URL of the suite's database (default: MIGRATIONS_DATABASE_URL, DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or MIGRATIONS_DATABASE_URL) is required")
    from libs.common.settings import libpq_url

    result = seed(
        libpq_url(args.database_url),
        args.org,
        workers=args.workers,
        teams=args.teams or max(1, args.workers // 10),
        bookings=args.bookings,
        workers_per_booking=args.workers_per_booking,
        fill=args.fill,
    )
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
