"""Pricing versions: list them, and publish a new one that becomes active at once. Reads: any staff
role; a new version: OWNER or ADMIN. Proto in, domain call, proto out."""

from __future__ import annotations

import grpc
from cws.booking.v1 import booking_pb2

from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.roles import MANAGERS, STAFF
from services.booking import orgs, pricing
from services.booking.models import Record
from services.booking.settings import BookingSettings


def _config(row: Record) -> booking_pb2.PricingConfig:
    return booking_pb2.PricingConfig(
        id=str(row.id),
        version=row.version,
        currency=row.currency,
        rules=[
            booking_pb2.PricingRule(
                cleaning_type=name, **{key: int(rule.get(key, 0)) for key in pricing.RULE_FIELDS}
            )
            for name, rule in sorted(row.rules.items())
        ],
        min_total_cents=row.min_total_cents,
        active=row.active,
        used=row.used,
        created_at=to_ts(row.created_at),
    )


class PricingApi:
    db: Database
    settings: BookingSettings

    async def ListPricingConfigs(
        self, request: booking_pb2.ListPricingConfigsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListPricingConfigsResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            # An org new here is set up first (profile and default pricing): its list starts at v1.
            await orgs.profile(uow)
            rows = await pricing.list_configs(uow)
        return booking_pb2.ListPricingConfigsResponse(configs=[_config(r) for r in rows])

    async def CreatePricingConfig(
        self, request: booking_pb2.CreatePricingConfigRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreatePricingConfigResponse:
        request_context.require_role(*MANAGERS)
        rules = [
            (rule.cleaning_type, {key: getattr(rule, key) for key in pricing.RULE_FIELDS})
            for rule in request.rules
        ]
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            profile = await orgs.profile(uow)
            row = await pricing.create_config(
                uow, rules, request.min_total_cents, request.currency, profile.currency
            )
        return booking_pb2.CreatePricingConfigResponse(config=_config(row))
