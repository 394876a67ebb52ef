"""Runner heartbeats in job_heartbeats (seed 002: name "jobs-runner", runner_id, last_heartbeat) and
the Better Stack ping. Ages are computed by the database clock, the one clock every runner and the
gateway's /readyz share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import text

from libs.common.db import Database, unit_of_work
from libs.common.logs import get_logger

log = get_logger(__name__)

HEARTBEAT_NAME = "jobs-runner"


@dataclass(frozen=True)
class Heartbeat:
    name: str
    runner_id: str
    last_heartbeat: datetime
    age_seconds: float


async def beat(db: Database, runner_id: str, *, starting: bool = False) -> float:
    """Record that this runner is alive; returns the database's clock (epoch seconds), which the
    scheduler uses to compute schedule slots the same way on every runner."""
    async with unit_of_work(db) as uow:
        return float(
            (
                await uow.session.execute(
                    text(
                        "INSERT INTO jobs.job_heartbeats (name, runner_id, last_heartbeat, started_at)"
                        " VALUES (:name, :runner, now(), now())"
                        " ON CONFLICT (name, runner_id) DO UPDATE SET last_heartbeat = now(),"
                        "   started_at = CASE WHEN :starting THEN now()"
                        "     ELSE jobs.job_heartbeats.started_at END"
                        " RETURNING extract(epoch FROM now())"
                    ),
                    {"name": HEARTBEAT_NAME, "runner": runner_id, "starting": starting},
                )
            ).scalar_one()
        )


_SELECT = (
    "SELECT name, runner_id, last_heartbeat,"
    " greatest(extract(epoch FROM clock_timestamp() - last_heartbeat), 0) AS age_seconds"
    " FROM jobs.job_heartbeats ORDER BY last_heartbeat DESC LIMIT :limit"
)


async def recent(db: Database, limit: int = 50) -> list[Heartbeat]:
    """The freshest heartbeats first (one row per runner that ever beat, until pruned)."""
    async with unit_of_work(db) as uow:
        rows = (await uow.session.execute(text(_SELECT), {"limit": limit})).all()
    return [Heartbeat(r.name, r.runner_id, r.last_heartbeat, float(r.age_seconds)) for r in rows]


async def freshest(db: Database) -> Heartbeat | None:
    found = await recent(db, limit=1)
    return found[0] if found else None


async def prune(db: Database, *, runs_days: int, heartbeat_days: int) -> tuple[int, int]:
    """Old job_runs (one per job per slot adds up) and heartbeats of runners long gone (a pod's
    host name changes with every deploy)."""
    async with unit_of_work(db) as uow:
        runs = await uow.session.execute(
            text("DELETE FROM jobs.job_runs WHERE started_at < now() - make_interval(days => :days)"),
            {"days": runs_days},
        )
        beats = await uow.session.execute(
            text(
                "DELETE FROM jobs.job_heartbeats WHERE last_heartbeat < now() - make_interval(days => :days)"
            ),
            {"days": heartbeat_days},
        )
    return runs.rowcount, beats.rowcount  # type: ignore[attr-defined]


async def ping_better_stack(http: httpx.AsyncClient, url: str) -> bool:
    """GET the monitor's heartbeat URL; a failure is logged, never raised (the monitor alerts on
    missing pings by itself)."""
    try:
        response = await http.get(url)
        response.raise_for_status()
        return True
    except Exception as error:  # refused, timed out, 5xx, a malformed URL: log it and carry on
        log.warning("better_stack_ping_failed", error=f"{type(error).__name__}: {error}")
        return False
