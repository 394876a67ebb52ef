"""python -m services.media: build settings, wire dependencies, serve.

The storage backend (ORDER_STORAGE_BACKEND) is built once inside the running loop, with the peers
(booking, notify); the durable consumers (events.py) keep the org's paused flag."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
from dataclasses import dataclass
from pathlib import Path

import grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc, views_pb2, views_pb2_grpc
from cws.media.v1 import media_pb2, media_pb2_grpc

from libs.common.grpc_server import ServiceApp, main
from services.media import janitor
from services.media.events import CONSUMERS
from services.media.grpc_api import MediaServicer
from services.media.grpc_privacy import MediaPrivacyServicer
from services.media.grpc_views import MediaViewsServicer
from services.media.models import SCHEMA, event_tables
from services.media.peers import Peers, open_peers
from services.media.settings import MediaSettings
from services.media.storage import build_storage
from services.media.storage.base import Storage


@dataclass
class Wiring:
    """What register() builds inside the running loop."""

    settings: MediaSettings
    peers: Peers | None = None
    storage: Storage | None = None


def build() -> ServiceApp:
    settings = MediaSettings()
    wiring = Wiring(settings)

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        wiring.peers = open_peers(settings)
        wiring.storage = build_storage(settings)
        media_pb2_grpc.add_MediaServiceServicer_to_server(
            MediaServicer(app.db, settings, wiring.peers, wiring.storage), server
        )
        views_pb2_grpc.add_ViewsServiceServicer_to_server(MediaViewsServicer(app.db), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(MediaPrivacyServicer(app.db), server)

    return ServiceApp(
        name="media",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.media_grpc_port,
        http_port=settings.media_http_port,
        register=register,
        consumers=CONSUMERS,
        audit_admin_writes=True,
        # The storage janitor's retry-queue gauge (janitor.py), counted across orgs every 30 s.
        background=[lambda app: janitor.refresh_retry_gauge(app.db)],
        service_names=(
            media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name,
            views_pb2.DESCRIPTOR.services_by_name["ViewsService"].full_name,
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
        ),
    )


if __name__ == "__main__":
    main(build())
