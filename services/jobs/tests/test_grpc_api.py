"""The jobs service through its gRPC API (the session process, scheduler off): GetHeartbeat for any
signed context, GetStatus for owners and admins only, every registered job listed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from libs.common import context as request_context
from services.jobs.registry import REGISTRY
from services.jobs.tests.conftest import JobsEnv, reset_jobs
from tools.processes import DEV_SECRETS

Code = grpc.StatusCode
JWT = request_context.AuthMethod.Value("AUTH_METHOD_JWT")
ANONYMOUS = request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS")


def signed(role: str = "", auth_method: int = JWT, principal: str = "") -> tuple[tuple[str, Any], ...]:
    ctx = request_context.RequestContext(
        org_id=str(uuid.uuid4()) if role else "",
        principal_id=principal or (str(uuid.uuid4()) if role else ""),
        role=role,
        auth_method=auth_method,  # type: ignore[arg-type]
        request_id=f"test-{uuid.uuid4().hex[:12]}",
    )
    return request_context.signed_metadata(ctx, DEV_SECRETS["INTERNAL_CONTEXT_SECRET"])


@pytest.fixture
async def stub(jobs: Any) -> AsyncIterator[jobs_pb2_grpc.JobsServiceStub]:
    async with grpc.aio.insecure_channel(jobs.target) as channel:
        yield jobs_pb2_grpc.JobsServiceStub(channel)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


async def test_heartbeat_answers_any_signed_context_with_the_freshest_beat(
    stub: Any, jobs_setup: JobsEnv
) -> None:
    assert await code_of(stub.GetHeartbeat(jobs_pb2.GetHeartbeatRequest())) == Code.UNAUTHENTICATED
    run = jobs_setup.cli("--job", "storage-janitor", "--once")
    assert run.returncode == 0, run.output

    # The gateway's /readyz asks with its anonymous context.
    response = await stub.GetHeartbeat(jobs_pb2.GetHeartbeatRequest(), metadata=signed(auth_method=ANONYMOUS))
    assert response.found
    beat = response.heartbeat
    assert (beat.name, beat.runner_id) == ("jobs-runner", jobs_setup.runner_id())
    assert 0 <= beat.age_seconds < 30 and beat.last_heartbeat.seconds > 0


async def test_status_lists_every_registered_job_for_owners_and_admins_only(
    stub: Any, jobs_setup: JobsEnv, stack: Any
) -> None:
    reset_jobs(stack, "storage-janitor", "notifications-digest-monthly")
    run = jobs_setup.cli("--job", "storage-janitor", "--once")
    assert run.returncode == 0, run.output

    for role in ("VIEWER", "DISPATCHER", "FINANCE"):
        call = stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=signed(role))
        assert await code_of(call) == Code.PERMISSION_DENIED, role
    anonymous = stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=signed(auth_method=ANONYMOUS))
    assert await code_of(anonymous) == Code.UNAUTHENTICATED

    for role in ("OWNER", "ADMIN"):
        status = await stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=signed(role))
        assert [(j.name, j.interval_seconds) for j in status.jobs] == [
            (job.name, job.interval_seconds) for job in REGISTRY
        ]
        by_name = {job.name: job for job in status.jobs}
        janitor = by_name["storage-janitor"]
        assert janitor.last_outcome == "skipped" and janitor.runs_total == 1
        assert janitor.last_runner_id == jobs_setup.runner_id() and janitor.HasField("last_finished_at")
        assert not janitor.HasField("last_success_at")  # skipped is not a success
        never = by_name["notifications-digest-monthly"]  # listed although it never ran
        assert never.runs_total == 0 and not never.HasField("last_started_at") and never.last_outcome == ""
        assert jobs_setup.runner_id() in {beat.runner_id for beat in status.heartbeats}
        ages = [beat.age_seconds for beat in status.heartbeats]
        assert ages == sorted(ages)  # freshest first
