"""python -m services.integrations: build settings, wire dependencies, serve.

The peers (booking, billing, iam, notify), the HTTP client for the providers' OAuth endpoints and the
token box are built once inside the running loop; the sync runner keeps one breaker per provider."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from cws.integrations.v1 import integrations_pb2, integrations_pb2_grpc

from libs.common.grpc_server import ServiceApp, main
from services.integrations.crypto import TokenBox
from services.integrations.events import CONSUMERS
from services.integrations.grants import GrantStore
from services.integrations.grpc_api import IntegrationsServicer
from services.integrations.models import SCHEMA, event_tables
from services.integrations.peers import Peers, open_peers
from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_runner import SyncRunner


@dataclass
class Wiring:
    """What register() builds inside the running loop, closed when the process stops."""

    settings: IntegrationsSettings
    peers: list[Peers] = field(default_factory=list)
    http: list[httpx.AsyncClient] = field(default_factory=list)


def build() -> ServiceApp:
    settings = IntegrationsSettings()
    wiring = Wiring(settings)

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        peers = open_peers(settings)
        http = httpx.AsyncClient(timeout=settings.integrations_http_timeout_seconds)
        wiring.peers.append(peers)
        wiring.http.append(http)
        keys = settings.token_keys
        store = GrantStore(app.db, settings, http, peers, TokenBox(keys) if keys else None)
        integrations_pb2_grpc.add_IntegrationsServiceServicer_to_server(
            IntegrationsServicer(store, SyncRunner(store)), server
        )

    async def close_on_stop(app: ServiceApp) -> None:
        try:
            await asyncio.Event().wait()  # until the process stops
        finally:
            for http in wiring.http:
                await http.aclose()
            for peers in wiring.peers:
                await peers.close()

    return ServiceApp(
        name="integrations",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.integrations_grpc_port,
        http_port=settings.integrations_http_port,
        register=register,
        background=[close_on_stop],
        consumers=CONSUMERS,
        audit_admin_writes=True,
        service_names=(integrations_pb2.DESCRIPTOR.services_by_name["IntegrationsService"].full_name,),
    )


if __name__ == "__main__":
    main(build())
