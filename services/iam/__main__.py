"""python -m services.iam: build settings, wire dependencies, serve."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
from pathlib import Path

import grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc, views_pb2, views_pb2_grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc

from libs.common.grpc_server import ServiceApp, main
from services.iam import temp_passwords
from services.iam.events import CONSUMERS
from services.iam.grpc_api import IamServicer
from services.iam.grpc_privacy import IamPrivacyServicer
from services.iam.grpc_views import IamViewsServicer
from services.iam.models import SCHEMA, event_tables
from services.iam.settings import IamSettings


async def sweep_expired_handoffs(app: ServiceApp) -> None:
    await temp_passwords.sweep(app.db)


def build() -> ServiceApp:
    settings = IamSettings()
    settings.configure_password_hashing()

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        iam_pb2_grpc.add_IamServiceServicer_to_server(IamServicer(app.db, settings), server)
        views_pb2_grpc.add_ViewsServiceServicer_to_server(IamViewsServicer(app.db), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(IamPrivacyServicer(app.db), server)

    return ServiceApp(
        name="iam",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.iam_grpc_port,
        http_port=settings.iam_http_port,
        register=register,
        consumers=CONSUMERS,
        # Expired temporary-password hand-offs and sign-up requests leave the disk (temp_passwords.py).
        background=[sweep_expired_handoffs],
        service_names=(
            iam_pb2.DESCRIPTOR.services_by_name["IamService"].full_name,
            views_pb2.DESCRIPTOR.services_by_name["ViewsService"].full_name,
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
        ),
    )


if __name__ == "__main__":
    main(build())
