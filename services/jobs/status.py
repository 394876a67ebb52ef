"""What the operators' view shows: every registered job (even one never run) with its interval and
its recorded status, and every org's Google Calendar and QuickBooks sync state (gcal-sync, qbo-sync)
as the integrations service records it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import grpc
from cws.integrations.v1 import integrations_pb2
from sqlalchemy import text

from libs.common.context import service_context
from libs.common.db import Database, unit_of_work
from libs.common.grpc_client import acting_as
from services.jobs.peers import Peers
from services.jobs.registry import Job

# The status view answers within its own budget even when integrations hangs: the syncs are then
# left out, and the answer says why.
SYNC_STATES_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class JobView:
    name: str
    interval_seconds: int
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_success_at: datetime | None = None
    last_outcome: str = ""
    consecutive_failures: int = 0
    last_error: str = ""
    last_runner_id: str = ""
    runs_total: int = 0
    failures_total: int = 0


async def job_views(db: Database, jobs: list[Job]) -> list[JobView]:
    async with unit_of_work(db) as uow:
        rows = (
            await uow.session.execute(
                text(
                    "SELECT name, last_started_at, last_finished_at, last_success_at, last_outcome,"
                    " consecutive_failures, last_error, last_runner_id, runs_total, failures_total"
                    " FROM jobs.job_status WHERE name = ANY(:names)"
                ),
                {"names": [job.name for job in jobs]},
            )
        ).all()
    by_name = {row.name: row for row in rows}
    views = []
    for job in jobs:
        row = by_name.get(job.name)
        if row is None:
            views.append(JobView(job.name, job.interval_seconds))
            continue
        views.append(
            JobView(
                name=job.name,
                interval_seconds=job.interval_seconds,
                last_started_at=row.last_started_at,
                last_finished_at=row.last_finished_at,
                last_success_at=row.last_success_at,
                last_outcome=row.last_outcome,
                consecutive_failures=row.consecutive_failures,
                last_error=row.last_error or "",
                last_runner_id=row.last_runner_id,
                runs_total=row.runs_total,
                failures_total=row.failures_total,
            )
        )
    return views


@dataclass(frozen=True)
class JobFigures:
    name: str
    last_success_epoch: float | None
    failures_total: int


async def job_figures(db: Database) -> tuple[float | None, float, list[JobFigures]]:
    """For /metrics: the freshest heartbeat (epoch), the database clock (epoch) and per-job figures."""
    async with unit_of_work(db) as uow:
        clock = (
            await uow.session.execute(
                text(
                    "SELECT extract(epoch FROM clock_timestamp()) AS now,"
                    " (SELECT extract(epoch FROM max(last_heartbeat)) FROM jobs.job_heartbeats) AS beat"
                )
            )
        ).one()
        rows = (
            await uow.session.execute(
                text(
                    "SELECT name, extract(epoch FROM last_success_at) AS success, failures_total"
                    " FROM jobs.job_status ORDER BY name"
                )
            )
        ).all()
    figures = [
        JobFigures(r.name, float(r.success) if r.success is not None else None, int(r.failures_total))
        for r in rows
    ]
    return (float(clock.beat) if clock.beat is not None else None), float(clock.now), figures


async def integration_syncs(peers: Peers) -> tuple[list[integrations_pb2.SyncState], str]:
    """Every org's sync state of both providers, and "" (or why there are none: integrations not
    deployed here, or not answering). Asked as the jobs service itself, with no org: the integrations
    service answers ListSyncStates to service callers only."""
    if peers.integrations is None:
        return [], "integrations is not deployed here (INTEGRATIONS_GRPC_TARGET is empty)"
    try:
        with acting_as(service_context("jobs")):
            response = await peers.integrations.stub.ListSyncStates(
                integrations_pb2.ListSyncStatesRequest(), timeout=SYNC_STATES_TIMEOUT_SECONDS
            )
    except grpc.aio.AioRpcError as error:
        return [], f"integrations did not answer ({error.code().name})"
    return list(response.states), ""
