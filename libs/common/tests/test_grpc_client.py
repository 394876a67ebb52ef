"""Typed calls through `open_peer` against a real grpc.aio server in this process: the signing
interceptor sends the context of `acting_as`/`set_outgoing`, signed with the process's own key for the
method and request, with the default deadline, and refuses a call that does not say who it acts as (or
has no key to sign with) before anything reaches the wire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from libs.common.call_signing import CallVerifier, body_digest
from libs.common.context import RequestContext, service_context
from libs.common.errors import Unauthenticated
from libs.common.grpc_client import (
    MissingCallContext,
    MissingSigningKey,
    Peer,
    acting_as,
    open_peer,
    set_outgoing,
)
from libs.common.internal_keys import CallSigner
from tools.testkit import GATEWAY, JWT

if TYPE_CHECKING:  # the async stub is a type only (mypy-protobuf); at run time it is OpsServiceStub
    from cws.common.v1.ops_pb2_grpc import OpsServiceAsyncStub


@dataclass
class Seen:
    """One call as the server saw it."""

    method: str
    metadata: tuple[tuple[str, Any], ...]
    time_remaining: float | None


@dataclass
class Recorder(ops_pb2_grpc.OpsServiceServicer):
    calls: list[Seen] = field(default_factory=list)

    async def GetReadiness(
        self, request: ops_pb2.GetReadinessRequest, context: grpc.aio.ServicerContext
    ) -> ops_pb2.GetReadinessResponse:
        metadata = tuple((item.key, item.value) for item in context.invocation_metadata() or ())
        self.calls.append(Seen("GetReadiness", metadata, context.time_remaining()))
        return ops_pb2.GetReadinessResponse(service="recorder", ok=True)


@dataclass
class Server:
    target: str
    recorder: Recorder


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    recorder = Recorder()
    grpc_server = grpc.aio.server()
    ops_pb2_grpc.add_OpsServiceServicer_to_server(recorder, grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(f"127.0.0.1:{port}", recorder)
    finally:
        await grpc_server.stop(None)


@pytest.fixture
async def peer(server: Server) -> AsyncIterator[Peer[OpsServiceAsyncStub]]:
    opened: Peer[OpsServiceAsyncStub] = open_peer(
        "recorder", server.target, ops_pb2_grpc.OpsServiceStub, signer=GATEWAY, deadline_seconds=7
    )
    try:
        yield opened
    finally:
        await opened.close()


def staff(org_id: str) -> RequestContext:
    return RequestContext(
        org_id=org_id,
        principal_id=str(uuid.uuid4()),
        role="DISPATCHER",
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        session_id=str(uuid.uuid4()),
    )


READINESS = "/cws.common.v1.OpsService/GetReadiness"
EMPTY_BODY = body_digest(ops_pb2.GetReadinessRequest().SerializeToString())


def received(seen: Seen, signer: CallSigner = GATEWAY) -> RequestContext:
    """The context as a service trusting `signer` verifies it (each verifier has its own nonce memory)."""
    verifier = CallVerifier({signer.name: (signer.key.public_key(),)}, max_age_seconds=60)
    return verifier.verify(seen.metadata, READINESS, EMPTY_BODY)


async def test_a_call_carries_the_signed_context_it_acts_as_and_the_default_deadline(
    server: Server, peer: Peer[OpsServiceAsyncStub]
) -> None:
    org_id = str(uuid.uuid4())
    ctx = staff(org_id)
    with acting_as(ctx):
        answer = await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())
    assert answer.service == "recorder"

    [seen] = server.recorder.calls
    got = received(seen)
    assert (got.org_id, got.principal_id, got.role, got.auth_method, got.request_id, got.session_id) == (
        org_id,
        ctx.principal_id,
        "DISPATCHER",
        JWT,
        ctx.request_id,
        ctx.session_id,
    )
    assert got.issued_at_unix_ms > 0, "stamped when signed, so a replayed context goes stale"
    assert len(got.nonce) == 16, "a fresh nonce per call, so a replay within the window is refused"
    # The peer's default deadline (7 s) reached the server.
    assert seen.time_remaining is not None and 6 < seen.time_remaining <= 7.05
    # Signed as the gateway with its key: another key of the same name is refused.
    with pytest.raises(Unauthenticated) as forged:
        received(seen, signer=CallSigner.new("gateway"))
    assert forged.value.code == "context_forged"
    # Signed for this method and this (empty) body only.
    verifier = CallVerifier({"gateway": (GATEWAY.key.public_key(),)}, max_age_seconds=60)
    with pytest.raises(Unauthenticated) as moved:
        verifier.verify(seen.metadata, "/cws.common.v1.OpsService/PruneEventTables", EMPTY_BODY)
    assert moved.value.code == "wrong_method"
    with pytest.raises(Unauthenticated) as changed:
        verifier.verify(seen.metadata, READINESS, body_digest(b"\x08\x01"))
    assert changed.value.code == "body_mismatch"


async def test_a_callers_own_timeout_and_metadata_are_kept(
    server: Server, peer: Peer[OpsServiceAsyncStub]
) -> None:
    ctx = staff(str(uuid.uuid4()))
    with acting_as(ctx):
        await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest(), timeout=2, metadata=(("x-trace", "t-1"),))
    [seen] = server.recorder.calls
    assert seen.time_remaining is not None and seen.time_remaining <= 2.05
    assert ("x-trace", "t-1") in seen.metadata
    assert received(seen).principal_id == ctx.principal_id


async def test_a_process_without_a_signing_key_cannot_call(server: Server) -> None:
    unsigned: Peer[OpsServiceAsyncStub] = open_peer(
        "recorder", server.target, ops_pb2_grpc.OpsServiceStub, signer=None, deadline_seconds=7
    )
    try:
        with (
            acting_as(service_context("jobs")),
            pytest.raises(MissingSigningKey, match="INTERNAL_SIGNING_KEY"),
        ):
            await unsigned.stub.GetReadiness(ops_pb2.GetReadinessRequest())
    finally:
        await unsigned.close()
    assert server.recorder.calls == [], "nothing reached the server"


async def test_a_call_outside_acting_as_raises_before_anything_is_sent(
    server: Server, peer: Peer[OpsServiceAsyncStub]
) -> None:
    with pytest.raises(MissingCallContext, match="GetReadiness"):
        await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())
    # The block's context ends with the block.
    with acting_as(service_context("jobs")):
        await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())
    with pytest.raises(MissingCallContext):
        await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())
    assert len(server.recorder.calls) == 1, "the refused calls never reached the server"

    # The plain channel is for probes, which carry no context, so they need none.
    probe = health_pb2_grpc.HealthStub(peer.plain_channel)
    answer = await probe.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_set_outgoing_holds_for_the_task_and_the_tasks_it_starts(
    server: Server, peer: Peer[OpsServiceAsyncStub]
) -> None:
    """The gateway sets the context once per request; each request is its own task, so two at once
    never sign as each other."""
    first, second = staff(str(uuid.uuid4())), staff(str(uuid.uuid4()))

    async def request(ctx: RequestContext) -> None:
        set_outgoing(ctx)

        async def child() -> None:
            await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())

        await asyncio.gather(child(), child())

    await asyncio.gather(asyncio.create_task(request(first)), asyncio.create_task(request(second)))
    signed_for = sorted(received(seen).request_id for seen in server.recorder.calls)
    assert signed_for == sorted([first.request_id] * 2 + [second.request_id] * 2)
    # Nothing leaked into this task.
    with pytest.raises(MissingCallContext):
        await peer.stub.GetReadiness(ops_pb2.GetReadinessRequest())
