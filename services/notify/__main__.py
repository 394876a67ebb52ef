"""python -m services.notify: build settings, wire dependencies, serve.

Beside the gRPC API it runs the delivery loop (woken by LISTEN/NOTIFY on enqueue, polling for due
retries) and the durable consumers (events.py) that turn domain events into emails and exports."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc, views_pb2, views_pb2_grpc
from cws.notify.v1 import notify_pb2, notify_pb2_grpc

from libs.common.event_types import Consumer
from libs.common.grpc_server import ServiceApp, main
from services.notify import events
from services.notify.delivery.loop import Delivery
from services.notify.grpc_api import NotifyServicer
from services.notify.grpc_privacy import NotifyPrivacyServicer
from services.notify.grpc_views import NotifyViewsServicer
from services.notify.models import SCHEMA, event_tables
from services.notify.peers import Peers, open_peers
from services.notify.settings import NotifySettings


@dataclass
class Wiring:
    """What register() builds inside the running loop, for the delivery loop and the consumers."""

    settings: NotifySettings
    delivery: Delivery | None = None
    peers: Peers | None = None


def build() -> ServiceApp:
    settings = NotifySettings()
    wiring = Wiring(settings)

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        wiring.delivery = Delivery(app.db, settings)
        wiring.peers = open_peers(settings)
        notify_pb2_grpc.add_NotifyServiceServicer_to_server(
            NotifyServicer(app.db, settings, wiring.delivery, wiring.peers), server
        )
        views_pb2_grpc.add_ViewsServiceServicer_to_server(NotifyViewsServicer(app.db), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(NotifyPrivacyServicer(app.db), server)

    def consumers(app: ServiceApp) -> Sequence[Consumer[Any]]:
        assert wiring.peers is not None  # ServiceApp resolves consumers after register()
        return events.consumers(settings, wiring.peers)

    async def delivery_loop(app: ServiceApp) -> None:
        assert wiring.delivery is not None
        await wiring.delivery.run()

    return ServiceApp(
        name="notify",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.notify_grpc_port,
        http_port=settings.notify_http_port,
        register=register,
        background=[delivery_loop],
        consumers=consumers,
        audit_admin_writes=True,
        service_names=(
            notify_pb2.DESCRIPTOR.services_by_name["NotifyService"].full_name,
            views_pb2.DESCRIPTOR.services_by_name["ViewsService"].full_name,
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
        ),
    )


if __name__ == "__main__":
    main(build())
