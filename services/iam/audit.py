"""admin_audit_logs: every admin write, every break-glass start and every write under break-glass,
written in the same transaction as the change it records. iam's own writes are recorded by the
domain code that makes them; other services' arrive as cws.<service>.audit.recorded (events.py).
Nothing else writes here: no API takes an audit row from a caller."""

from __future__ import annotations

import uuid
from typing import Any

from cws.common.v1 import audit_pb2, context_pb2
from google.protobuf.json_format import MessageToDict
from sqlalchemy import insert, select

from libs.common import context as request_context
from libs.common.db import UnitOfWork
from services.iam.models import AuditEntry, admin_audit_logs

AUTH_METHOD_NAMES = {
    context_pb2.AUTH_METHOD_JWT: "jwt",
    context_pb2.AUTH_METHOD_BASIC: "basic",
    context_pb2.AUTH_METHOD_ANONYMOUS: "anonymous",
    context_pb2.AUTH_METHOD_CLIENT_PORTAL: "client",
    context_pb2.AUTH_METHOD_WORKER_PORTAL: "worker",
}


async def record(
    uow: UnitOfWork,
    action: str,
    *,
    resource_type: str = "",
    resource_id: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    break_glass_reason: str | None = None,
    break_glass_session_id: str | None = None,
) -> None:
    ctx = request_context.current()
    assert uow.org_id is not None, "audit rows belong to an org"
    reason = break_glass_reason or (ctx.break_glass_reason if ctx.break_glass else None)
    bg_session = break_glass_session_id or (ctx.break_glass_session_id if ctx.break_glass else None)
    await uow.session.execute(
        insert(admin_audit_logs).values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            actor=request_context.actor_label(ctx),
            role=ctx.role,
            auth_method=AUTH_METHOD_NAMES.get(ctx.auth_method, ""),
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
            request_id=ctx.request_id,
            client_ip=ctx.client_ip,
            break_glass_session_id=uuid.UUID(bg_session) if bg_session else None,
            break_glass_reason=reason,
        )
    )


async def list_entries(uow: UnitOfWork, *, limit: int, offset: int, action: str = "") -> list[AuditEntry]:
    query = select(admin_audit_logs).order_by(admin_audit_logs.c.created_at.desc(), admin_audit_logs.c.id)
    if action:
        query = query.where(admin_audit_logs.c.action == action)
    rows = (await uow.session.execute(query.limit(limit).offset(offset))).all()
    return [AuditEntry.of(row) for row in rows]


async def record_from_service(uow: UnitOfWork, event: audit_pb2.AdminAuditRecorded) -> None:
    """An admin write another service committed (cws.<service>.audit.recorded), as an audit row."""
    await uow.session.execute(
        insert(admin_audit_logs).values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            actor=event.actor,
            role=event.role,
            auth_method=event.auth_method,
            action=event.action,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            request_id=event.request_id,
            client_ip=event.client_ip,
            break_glass_session_id=uuid.UUID(event.break_glass_session_id)
            if event.break_glass_session_id
            else None,
            break_glass_reason=event.break_glass_reason or None,
            before=_plain(MessageToDict(event.before)) if event.HasField("before") else None,
            after=_plain(MessageToDict(event.after)) if event.HasField("after") else None,
        )
    )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """A Struct holds every number as a double: whole ones (cents, counts) are stored as integers."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}
