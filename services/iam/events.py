"""What iam consumes: the admin writes other services record (cws.<service>.audit.recorded), so that
admin_audit_logs, owned here, holds every admin write of the suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from cws.common.v1 import audit_pb2
from nats.aio.msg import Msg

from libs.common.bus import stream_name
from libs.common.db import UnitOfWork
from libs.common.events import DurableConsumer
from libs.common.grpc_server import ServiceApp
from services.iam import audit

# Services whose admin writes are audited here; a new service adds its name.
AUDITED_SERVICES = ("booking", "notify")


async def on_admin_audit(uow: UnitOfWork, message: Msg) -> None:
    event = audit_pb2.AdminAuditRecorded.FromString(message.data)
    await uow.set_org(uuid.UUID(event.org_id))
    await audit.record_from_service(uow, event)


Background = Callable[[ServiceApp], Coroutine[Any, Any, None]]


def audit_consumers() -> list[Background]:
    def consumer_for(service: str) -> Background:
        async def run(app: ServiceApp) -> None:
            await DurableConsumer(
                db=app.db,
                bus=app.bus,
                service="iam",
                name=f"iam-audit-{service}",
                stream=stream_name(service),
                subject=f"cws.{service}.audit.recorded",
                handler=on_admin_audit,
            ).run()

        run.__name__ = f"audit_{service}"
        return run

    return [consumer_for(service) for service in AUDITED_SERVICES]
