"""python -m services.billing: build settings, wire dependencies, serve.

Beside the gRPC API it runs the loop that processes stored Stripe webhook events (webhook_loop.py)
and the durable consumers (events.py) that turn completed bookings into draft invoices."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc, views_pb2, views_pb2_grpc

from libs.common.circuit import CircuitBreaker
from libs.common.event_types import Consumer
from libs.common.grpc_server import ServiceApp, main
from services.billing import events
from services.billing.grpc_api import BillingServicer
from services.billing.grpc_privacy import BillingPrivacyServicer
from services.billing.grpc_views import BillingViewsServicer
from services.billing.models import SCHEMA, event_tables
from services.billing.peers import Peers, open_peers
from services.billing.settings import BillingSettings
from services.billing.stripe_api import StripeApi
from services.billing.webhook_loop import WebhookProcessor


@dataclass
class Wiring:
    """What register() builds inside the running loop, for the webhook loop and the consumers."""

    settings: BillingSettings
    peers: Peers | None = None
    processor: WebhookProcessor | None = None
    webhook_arrived: asyncio.Event = field(default_factory=asyncio.Event)


def stripe_api(settings: BillingSettings) -> StripeApi | None:
    """None without STRIPE_SECRET_KEY: invoices and manual payments work, card payments answer 503."""
    if not settings.stripe_enabled:
        return None
    breaker = CircuitBreaker(
        "stripe",
        failure_threshold=settings.stripe_circuit_failure_threshold,
        reset_seconds=settings.stripe_circuit_reset_seconds,
    )
    return StripeApi(
        settings.stripe_secret_key,
        settings.stripe_api_base or None,
        breaker,
        timeout=settings.stripe_timeout_seconds,
    )


def build() -> ServiceApp:
    settings = BillingSettings()
    wiring = Wiring(settings)

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        wiring.peers = open_peers(settings)
        wiring.processor = WebhookProcessor(app.db, settings, wiring.peers, wiring.webhook_arrived)
        stripe = stripe_api(settings)  # one client and breaker for every servicer
        billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(app.db, settings, wiring.peers, stripe, wiring.webhook_arrived), server
        )
        views_pb2_grpc.add_ViewsServiceServicer_to_server(
            BillingViewsServicer(app.db, settings.invoice_default_currency), server
        )
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(BillingPrivacyServicer(app.db, stripe), server)

    def consumers(app: ServiceApp) -> Sequence[Consumer[Any]]:
        assert wiring.peers is not None  # ServiceApp resolves consumers after register()
        return events.consumers(settings, wiring.peers)

    async def webhook_loop(app: ServiceApp) -> None:
        assert wiring.processor is not None
        await wiring.processor.run()

    return ServiceApp(
        name="billing",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.billing_grpc_port,
        http_port=settings.billing_http_port,
        register=register,
        background=[webhook_loop],
        consumers=consumers,
        audit_admin_writes=True,
        service_names=(
            billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
            views_pb2.DESCRIPTOR.services_by_name["ViewsService"].full_name,
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
        ),
    )


if __name__ == "__main__":
    main(build())
