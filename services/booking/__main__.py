"""python -m services.booking: build settings, wire dependencies, serve."""

from __future__ import annotations

from pathlib import Path

import grpc
from cws.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.common.bus import stream_name
from libs.common.events import DurableConsumer
from libs.common.grpc_server import ServiceApp, main
from services.booking.grpc_api import BookingServicer
from services.booking.models import SCHEMA, event_tables
from services.booking.orgs import on_org_created
from services.booking.settings import BookingSettings


async def org_profiles_consumer(app: ServiceApp) -> None:
    """New IAM orgs get their booking profile and default pricing."""
    await DurableConsumer(
        db=app.db,
        bus=app.bus,
        service="booking",
        name="booking-org-created",
        stream=stream_name("iam"),
        subject="cws.iam.org.created",
        handler=on_org_created,
    ).run()


def build() -> ServiceApp:
    settings = BookingSettings()

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        booking_pb2_grpc.add_BookingServiceServicer_to_server(BookingServicer(app.db, settings), server)

    return ServiceApp(
        name="booking",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.booking_grpc_port,
        http_port=settings.booking_http_port,
        register=register,
        background=[org_profiles_consumer],
        audit_admin_writes=True,
        service_names=(booking_pb2.DESCRIPTOR.services_by_name["BookingService"].full_name,),
    )


if __name__ == "__main__":
    main(build())
