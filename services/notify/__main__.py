"""python -m services.notify: build settings, wire dependencies, serve.

Beside the gRPC API it runs the delivery loop (woken by LISTEN/NOTIFY on enqueue, polling for due
retries) and the durable consumers that turn domain events into emails and exports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
from cws.notify.v1 import notify_pb2, notify_pb2_grpc

from libs.common.bus import stream_name
from libs.common.events import DurableConsumer
from libs.common.grpc_server import ServiceApp, main
from services.notify.delivery import Delivery
from services.notify.events import consumer_specs
from services.notify.grpc_api import NotifyServicer
from services.notify.models import SCHEMA, event_tables
from services.notify.peers import Peers, open_peers
from services.notify.settings import NotifySettings


@dataclass
class Wiring:
    """What register() builds inside the running loop and the background tasks share."""

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

    async def delivery_loop(app: ServiceApp) -> None:
        assert wiring.delivery is not None
        await wiring.delivery.run()

    async def event_consumers(app: ServiceApp) -> None:
        assert wiring.peers is not None
        specs = consumer_specs(settings, wiring.peers)
        await asyncio.gather(
            *(
                DurableConsumer(
                    db=app.db,
                    bus=app.bus,
                    service="notify",
                    name=spec.name,
                    stream=stream_name(spec.producer),
                    subject=spec.subject,
                    handler=spec.handler,
                ).run()
                for spec in specs
            )
        )

    return ServiceApp(
        name="notify",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.notify_grpc_port,
        http_port=settings.notify_http_port,
        register=register,
        background=[delivery_loop, event_consumers],
        audit_admin_writes=True,
        service_names=(notify_pb2.DESCRIPTOR.services_by_name["NotifyService"].full_name,),
    )


if __name__ == "__main__":
    main(build())
