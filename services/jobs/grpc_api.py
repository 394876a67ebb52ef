"""The jobs servicer: the freshest heartbeat (the gateway's /readyz), the operators' status view (with
every org's integration sync state), and an org's retention cleanup run now (POST
/v1/admin/retention/cleanup)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from libs.common import context as request_context
from libs.common.context import service_context
from libs.common.convert import to_ts, to_ts_or_none
from libs.common.db import Database
from libs.common.errors import Unavailable
from libs.common.grpc_client import acting_as
from libs.common.roles import MANAGERS
from services.jobs import heartbeats
from services.jobs.execution import LOCKED_REASON, SKIPPED, JobFailed, JobRunner, RunResult
from services.jobs.peers import Peers
from services.jobs.registry import REGISTRY, Job, RetentionPass, retention_pass
from services.jobs.status import JobView, integration_syncs, job_views

RETENTION_JOB = "retention-cleanup"
# While another run holds the org's lock (the scheduled run working in this org, or another of its
# admins), wait this long at most for it, leaving this much of the caller's deadline to answer in.
LOCK_WAIT_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.5
ANSWER_MARGIN_SECONDS = 1.0


def _heartbeat(beat: heartbeats.Heartbeat) -> jobs_pb2.Heartbeat:
    return jobs_pb2.Heartbeat(
        name=beat.name,
        runner_id=beat.runner_id,
        last_heartbeat=to_ts(beat.last_heartbeat),
        age_seconds=round(beat.age_seconds, 3),
    )


def _job(view: JobView) -> jobs_pb2.JobStatus:
    return jobs_pb2.JobStatus(
        name=view.name,
        interval_seconds=view.interval_seconds,
        last_started_at=to_ts_or_none(view.last_started_at),
        last_finished_at=to_ts_or_none(view.last_finished_at),
        last_success_at=to_ts_or_none(view.last_success_at),
        consecutive_failures=view.consecutive_failures,
        last_error=view.last_error,
        last_runner_id=view.last_runner_id,
        runs_total=view.runs_total,
        failures_total=view.failures_total,
        last_outcome=view.last_outcome,
    )


def _health(view: JobView) -> jobs_pb2.JobHealth:
    return jobs_pb2.JobHealth(
        name=view.name,
        interval_seconds=view.interval_seconds,
        last_finished_at=to_ts_or_none(view.last_finished_at),
        last_success_at=to_ts_or_none(view.last_success_at),
        consecutive_failures=view.consecutive_failures,
        last_outcome=view.last_outcome,
    )


@dataclasses.dataclass
class OrgRun:
    """One org's retention cleanup run now: the run as recorded, and what the pass did (None if the
    pass never finished: timed out, or the runner failed before it)."""

    result: RunResult
    done: RetentionPass | None


def _retention_for_org(org_id: str, request_id: str, runs: list[RetentionPass]) -> Job:
    """The retention-cleanup job narrowed to one org, acting as the jobs service in that org (the
    caller's request id kept, so its logs join the request's). Recorded as a run of the job."""

    async def run(peers: Peers) -> dict[str, int]:
        with acting_as(service_context("jobs", org_id, request_id)):
            done = await retention_pass(peers)
        runs.append(done)
        detail = {"orgs": 1, "orgs_failed": 1 if done.failures else 0, **done.counts}
        if done.failures:
            # As the scheduled run words an org's failure: the services and codes, never the org.
            codes = ", ".join(f"{service} {error.code().name}" for service, error in done.failures)
            raise JobFailed(f"1 of 1 orgs failed ({codes})", detail)
        return detail

    [registered] = [job for job in REGISTRY if job.name == RETENTION_JOB]
    # per_org=False: the runner makes no org walk; this job acts in its one org itself (above).
    return dataclasses.replace(registered, per_org=False, run=run)


async def run_retention_for_org(
    runner: JobRunner, org_id: str, request_id: str, wait_seconds: float
) -> OrgRun:
    """The job for one org now, under that org's lock (waiting up to `wait_seconds` for a run that
    holds it; other orgs' runs do not hold it up), recorded in job_runs and job_status as the runner
    records every run."""
    runs: list[RetentionPass] = []
    job = _retention_for_org(org_id, request_id, runs)
    give_up = time.monotonic() + wait_seconds
    while True:
        result = await runner.run_for_org(job, org_id)
        if not (result.outcome == SKIPPED and result.error == LOCKED_REASON):
            return OrgRun(result, runs[0] if runs else None)
        if time.monotonic() + LOCK_POLL_SECONDS > give_up:
            raise Unavailable(
                "a retention cleanup is running now; try again shortly", code="retention_cleanup_running"
            )
        await asyncio.sleep(LOCK_POLL_SECONDS)


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, db: Database, jobs: list[Job], runner: JobRunner) -> None:
        self.db = db
        # Every registered job with its effective interval, whether this process schedules it or not.
        self.jobs = jobs
        # Runs an org's retention cleanup on request, over this process's peers.
        self.runner = runner

    async def GetHeartbeat(
        self, request: jobs_pb2.GetHeartbeatRequest, context: Any
    ) -> jobs_pb2.GetHeartbeatResponse:
        # Any signed context, anonymous included: /readyz asks with the gateway's anonymous one, and
        # a heartbeat's age tells nothing about any org.
        beat = await heartbeats.freshest(self.db)
        if beat is None:
            return jobs_pb2.GetHeartbeatResponse(found=False)
        return jobs_pb2.GetHeartbeatResponse(found=True, heartbeat=_heartbeat(beat))

    async def GetStatus(self, request: jobs_pb2.GetStatusRequest, context: Any) -> jobs_pb2.GetStatusResponse:
        # Suite-wide internals: platform operators only (libs/common/context.py says who).
        request_context.require_platform_operator()
        views, beats, (syncs, syncs_unavailable) = await asyncio.gather(
            job_views(self.db, self.jobs), heartbeats.recent(self.db), integration_syncs(self.runner.peers)
        )
        return jobs_pb2.GetStatusResponse(
            jobs=[_job(view) for view in views],
            heartbeats=[_heartbeat(beat) for beat in beats],
            integration_syncs=syncs,
            integration_syncs_unavailable=syncs_unavailable,
        )

    async def GetJobHealth(
        self, request: jobs_pb2.GetJobHealthRequest, context: Any
    ) -> jobs_pb2.GetJobHealthResponse:
        # An org's managers may know whether the jobs their org depends on run well; the status's
        # errors, runners and counts stay the platform operators' (GetStatus).
        request_context.require_role(*MANAGERS)
        views = await job_views(self.db, self.jobs)
        return jobs_pb2.GetJobHealthResponse(jobs=[_health(view) for view in views])

    async def RunRetentionCleanup(
        self, request: jobs_pb2.RunRetentionCleanupRequest, context: Any
    ) -> jobs_pb2.RunRetentionCleanupResponse:
        ctx = request_context.require_role(*MANAGERS)
        org_id = str(request_context.current_org_id())
        remaining = context.time_remaining() if context is not None else None
        wait = LOCK_WAIT_SECONDS if remaining is None else max(remaining - ANSWER_MARGIN_SECONDS, 0.0)
        ran = await run_retention_for_org(self.runner, org_id, ctx.request_id, min(wait, LOCK_WAIT_SECONDS))
        if ran.done is None:
            # Timed out or broke before the pass finished: what it did is unknown; the run says why.
            raise Unavailable(
                "the retention cleanup did not finish; try again shortly", code="retention_cleanup_failed"
            )
        if any(service == "booking" for service, _ in ran.done.failures):
            # Booking keeps the deletion requests: without it nothing could be erased or counted.
            raise Unavailable(
                "the booking service is unavailable; try again shortly", code="booking_unavailable"
            )
        # Another service down answers too: its erasure steps are counted failed (and retried by the
        # next run); notify's retention deletions failing is recorded as the run's error.
        found = ran.done.counts
        return jobs_pb2.RunRetentionCleanupResponse(
            deleted=found.get("booking_deleted", 0) + found.get("notify_deleted", 0),
            deletion_requests_processed=found.get("deletion_requests_processed", 0),
            deletion_requests_completed=found.get("deletion_requests_completed", 0),
            deletion_steps_failed=found.get("deletion_steps_failed", 0),
        )
