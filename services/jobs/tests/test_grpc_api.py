"""The jobs service through its gRPC API (the session process, scheduler off): GetHeartbeat for any
signed context, GetStatus for platform operators only (Basic Auth owner or admin pairs, not an org's
signed-in owner), every registered job listed."""

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
from tools.testkit import Metadata, as_role, signed, signing_channel

Code = grpc.StatusCode


def anonymous() -> Metadata:
    """The context the gateway signs for a request nobody signed in to (its /readyz)."""
    return signed(
        request_context.RequestContext(
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS"),  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
        )
    )


def staff(role: str) -> Metadata:
    return as_role(str(uuid.uuid4()), role)


def operator(role: str) -> Metadata:
    """A platform operator: the installation's Basic Auth pair of `role`, as the gateway signs it."""
    return signed(
        request_context.RequestContext(
            org_id=str(uuid.uuid4()),
            principal_id=f"basic:{role.lower()}",
            role=role,
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_BASIC"),  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
        )
    )


@pytest.fixture
async def stub(jobs: Any) -> AsyncIterator[jobs_pb2_grpc.JobsServiceStub]:
    async with signing_channel(jobs.target) as channel:
        yield jobs_pb2_grpc.JobsServiceStub(channel)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


async def test_heartbeat_answers_any_signed_context_with_the_freshest_beat(
    stub: Any, jobs_setup: JobsEnv
) -> None:
    assert await code_of(stub.GetHeartbeat(jobs_pb2.GetHeartbeatRequest())) == Code.UNAUTHENTICATED
    run = await jobs_setup.cli("--job", "storage-janitor", "--once")
    assert run.returncode == 0, run.output

    # The gateway's /readyz asks with its anonymous context.
    response = await stub.GetHeartbeat(jobs_pb2.GetHeartbeatRequest(), metadata=anonymous())
    assert response.found
    beat = response.heartbeat
    assert (beat.name, beat.runner_id) == ("jobs-runner", jobs_setup.runner_id())
    assert 0 <= beat.age_seconds < 30 and beat.last_heartbeat.seconds > 0


async def test_status_lists_every_registered_job_for_platform_operators_only(
    stub: Any, jobs_setup: JobsEnv, stack: Any
) -> None:
    await reset_jobs(stack, "storage-janitor", "notifications-digest-monthly")
    run = await jobs_setup.cli("--job", "storage-janitor", "--once")
    assert run.returncode == 0, run.output

    # Suite-wide internals: no org's signed-in user, owners included (issue 9), nor a lesser pair.
    for metadata in (*map(staff, ("OWNER", "ADMIN", "VIEWER", "DISPATCHER", "FINANCE")), operator("VIEWER")):
        call = stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=metadata)
        assert await code_of(call) == Code.PERMISSION_DENIED
    unsigned_in = stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=anonymous())
    assert await code_of(unsigned_in) == Code.UNAUTHENTICATED

    for role in ("OWNER", "ADMIN"):
        status = await stub.GetStatus(jobs_pb2.GetStatusRequest(), metadata=operator(role))
        assert [(j.name, j.interval_seconds) for j in status.jobs] == [
            (job.name, job.interval_seconds) for job in REGISTRY
        ]
        by_name = {job.name: job for job in status.jobs}
        janitor = by_name["storage-janitor"]
        assert janitor.last_outcome == "ok" and janitor.runs_total == 1
        assert janitor.last_runner_id == jobs_setup.runner_id() and janitor.HasField("last_finished_at")
        assert janitor.HasField("last_success_at")
        never = by_name["notifications-digest-monthly"]  # listed although it never ran
        assert never.runs_total == 0 and not never.HasField("last_started_at") and never.last_outcome == ""
        assert jobs_setup.runner_id() in {beat.runner_id for beat in status.heartbeats}
        ages = [beat.age_seconds for beat in status.heartbeats]
        assert ages == sorted(ages)  # freshest first
