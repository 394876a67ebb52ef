"""The jobs servicer: the freshest heartbeat (the gateway's /readyz) and the operators' status view."""

from __future__ import annotations

from typing import Any

from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from libs.common import context as request_context
from libs.common.convert import to_ts, to_ts_or_none
from libs.common.db import Database
from services.jobs import heartbeats
from services.jobs.registry import Job
from services.jobs.status import JobView, job_views


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


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, db: Database, jobs: list[Job]) -> None:
        self.db = db
        # Every registered job with its effective interval, whether this process schedules it or not.
        self.jobs = jobs

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
        views = await job_views(self.db, self.jobs)
        beats = await heartbeats.recent(self.db)
        return jobs_pb2.GetStatusResponse(
            jobs=[_job(view) for view in views], heartbeats=[_heartbeat(beat) for beat in beats]
        )
