"""iam's audit consumers: an admin write another service announces (cws.<service>.audit.recorded)
becomes a row in that org's admin_audit_logs, for every audited service.

The events are published here as the producers' outbox relays would publish them, so the test needs
only the iam process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cws.common.v1 import audit_pb2
from cws.iam.v1 import iam_pb2, iam_pb2_grpc

from libs.common.bus import EventBus, event_headers
from libs.common.event_types import Event
from services.iam.events import AUDIT_CONSUMERS, AUDIT_RECORDED, AUDITED_SERVICES
from tools.testkit import as_role, eventually, signing_channel


@pytest.fixture
async def bus(stack: Any) -> AsyncIterator[dict[str, EventBus]]:
    """One connection per audited service, as that service's NATS user: each publishes its own."""
    connected = {
        service: EventBus(stack.nats.url, f"iam-audit-test-{service}", **stack.nats.login(service))
        for service in AUDITED_SERVICES
    }
    for each in connected.values():
        await each.connect()
    yield connected
    for each in connected.values():
        await each.close()


@pytest.fixture
async def stub(iam: Any) -> AsyncIterator[iam_pb2_grpc.IamServiceStub]:
    async with signing_channel(iam.target) as channel:
        yield iam_pb2_grpc.IamServiceStub(channel)


async def publish(
    bus: dict[str, EventBus], event: Event[audit_pb2.AdminAuditRecorded], message: Any, event_id: str
) -> None:
    headers = event_headers(
        event_id, event.subject, event.producer, datetime.now(UTC), message.org_id, "req-1"
    )
    await bus[event.producer].js.publish(event.subject, message.SerializeToString(), headers=headers)


def test_one_consumer_per_audited_service_with_its_durable_name() -> None:
    assert [c.name for c in AUDIT_CONSUMERS] == [f"iam-audit-{s}" for s in AUDITED_SERVICES]
    assert [c.event.subject for c in AUDIT_CONSUMERS] == [f"cws.{s}.audit.recorded" for s in AUDITED_SERVICES]
    assert {"booking", "notify"} <= set(AUDITED_SERVICES)


async def test_writes_of_every_audited_service_land_in_the_orgs_audit_log(
    bus: dict[str, EventBus], stub: Any, make_org: Any
) -> None:
    org, other = await make_org(), await make_org()
    session = str(uuid.uuid4())
    for event in AUDIT_RECORDED:
        message = audit_pb2.AdminAuditRecorded(
            org_id=org.org_id,
            actor=org.owner_id,
            role="OWNER",
            auth_method="jwt",
            action=f"{event.producer}.DoSomething",
            resource_type="thing",
            resource_id="t-1",
            request_id="req-1",
            break_glass_session_id=session,
            break_glass_reason="incident 9",
        )
        await publish(bus, event, message, str(uuid.uuid4()))

    async def rows() -> list[iam_pb2.AuditLog]:
        listed = await stub.ListAuditLogs(
            iam_pb2.ListAuditLogsRequest(), metadata=as_role(org.org_id, "OWNER")
        )
        assert len(listed.entries) >= len(AUDIT_RECORDED), listed.entries
        return list(listed.entries)

    entries = await eventually(rows, message="audit rows from every audited service")
    assert sorted(e.action for e in entries) == sorted(f"{s}.DoSomething" for s in AUDITED_SERVICES)
    for entry in entries:
        assert (entry.actor, entry.role, entry.resource_type, entry.resource_id) == (
            org.owner_id,
            "OWNER",
            "thing",
            "t-1",
        )
        assert (entry.break_glass_session_id, entry.break_glass_reason) == (session, "incident 9")
    elsewhere = await stub.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(), metadata=as_role(other.org_id, "OWNER")
    )
    assert list(elsewhere.entries) == []
