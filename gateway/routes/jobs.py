"""/v1/admin/jobs/status: what the scheduler ran, and whether its runners are alive. Suite-wide (every
org's job runs, their errors, the runners' hosts, and every org's Google Calendar and QuickBooks sync
state of gcal-sync and qbo-sync): platform operators only, not an org's owner.

/v1/admin/jobs/health (issue 16): the same jobs for an org's OWNER and ADMIN, cut to whether each is
running well (its interval, last success and finish, consecutive failures, last outcome), so the web
console's today page can say so. No error text, runner ids, run counts or heartbeats: those describe
the installation (and other orgs' runs), and stay the operators'."""

from __future__ import annotations

from typing import Any

from cws.jobs.v1 import jobs_pb2
from fastapi import APIRouter, Depends

from gateway.access import ADMIN
from gateway.deps import require_platform_operator, require_roles
from gateway.principal import Principal
from gateway.routes.convert import optional_time
from gateway.routes.integrations import sync_view
from gateway.stubs import Jobs
from libs.common.roles import MANAGERS

router = APIRouter(prefix="/v1/admin", tags=["jobs"], dependencies=[ADMIN])


def _job(job: jobs_pb2.JobStatus) -> dict[str, Any]:
    return {
        "name": job.name,
        "interval_seconds": job.interval_seconds,
        "last_started_at": optional_time(job, "last_started_at"),
        "last_finished_at": optional_time(job, "last_finished_at"),
        "last_success_at": optional_time(job, "last_success_at"),
        "consecutive_failures": job.consecutive_failures,
        "last_error": job.last_error or None,
        "last_runner_id": job.last_runner_id or None,
        "runs_total": job.runs_total,
        "failures_total": job.failures_total,
        # "" until the job first finishes; ok | failed | skipped after.
        "last_outcome": job.last_outcome or None,
    }


def _heartbeat(beat: jobs_pb2.Heartbeat) -> dict[str, Any]:
    return {
        "name": beat.name,
        "runner_id": beat.runner_id,
        "last_heartbeat": optional_time(beat, "last_heartbeat"),
        "age_seconds": beat.age_seconds,
    }


@router.get(
    "/jobs/status", summary="Every scheduled job's last runs, failures and errors, and runner heartbeats"
)
async def jobs_status(
    jobs: Jobs, principal: Principal = Depends(require_platform_operator)
) -> dict[str, Any]:
    response = await jobs.GetStatus(jobs_pb2.GetStatusRequest())
    return {
        "jobs": [_job(job) for job in response.jobs],
        "heartbeats": [_heartbeat(beat) for beat in response.heartbeats],
        # gcal-sync and qbo-sync per org: the integrations service's record of each org's last pass.
        "integration_syncs": [
            {"org_id": state.org_id, "provider": state.provider, **sync_view(state)}
            for state in response.integration_syncs
        ],
        "integration_syncs_unavailable": response.integration_syncs_unavailable or None,
    }


def _health(job: jobs_pb2.JobHealth) -> dict[str, Any]:
    return {
        "name": job.name,
        "interval_seconds": job.interval_seconds,
        "last_success_at": optional_time(job, "last_success_at"),
        "last_finished_at": optional_time(job, "last_finished_at"),
        "consecutive_failures": job.consecutive_failures,
        "last_outcome": job.last_outcome or None,
    }


@router.get(
    "/jobs/health",
    summary="Whether each scheduled job runs well (OWNER, ADMIN): no errors, runners or hosts",
    dependencies=[Depends(require_roles(*MANAGERS))],
)
async def jobs_health(jobs: Jobs) -> dict[str, Any]:
    response = await jobs.GetJobHealth(jobs_pb2.GetJobHealthRequest())
    return {"jobs": [_health(job) for job in response.jobs]}
