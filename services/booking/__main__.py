"""python -m services.booking: build settings, wire dependencies, serve."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
from pathlib import Path

import grpc
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc, views_pb2, views_pb2_grpc

from libs.common.grpc_server import ServiceApp, main
from services.booking.events import BROADCASTS, CONSUMERS
from services.booking.grpc_api import BookingServicer
from services.booking.grpc_privacy import PrivacyServicer
from services.booking.grpc_views import ViewsServicer
from services.booking.models import SCHEMA, event_tables
from services.booking.settings import BookingSettings


def build() -> ServiceApp:
    settings = BookingSettings()

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        booking_pb2_grpc.add_BookingServiceServicer_to_server(BookingServicer(app.db, settings), server)
        views_pb2_grpc.add_ViewsServiceServicer_to_server(ViewsServicer(app.db), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(PrivacyServicer(app.db), server)

    return ServiceApp(
        name="booking",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.booking_grpc_port,
        http_port=settings.booking_http_port,
        register=register,
        consumers=CONSUMERS,
        broadcasts=BROADCASTS,
        audit_admin_writes=True,
        service_names=(
            booking_pb2.DESCRIPTOR.services_by_name["BookingService"].full_name,
            views_pb2.DESCRIPTOR.services_by_name["ViewsService"].full_name,
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
        ),
    )


if __name__ == "__main__":
    main(build())
