"""Pricing versions. Any staff role may read them; OWNER and ADMIN publish a new version, which
becomes the one estimates use at once. Versions an estimate used never change, so earlier leads
keep their snapshot. The booking service checks the roles and the rules again."""

from __future__ import annotations

from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from fastapi import APIRouter, Depends
from pydantic import Field, StrictInt

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.schemas import Strict
from gateway.stubs import Booking
from libs.common.roles import MANAGERS, STAFF

router = APIRouter(prefix="/v1/admin", tags=["pricing"], dependencies=[ADMIN])
MAX_CENTS = 10_000_000
MAX_MINUTES = 1_440

Cents = Annotated[StrictInt, Field(ge=0, le=MAX_CENTS)]
Minutes = Annotated[StrictInt, Field(ge=0, le=MAX_MINUTES)]
CleaningType = Annotated[str, Field(pattern=r"^[a-z_]{1,20}$")]
RULE_FIELDS = (
    "base_cents",
    "per_bed_cents",
    "per_bath_cents",
    "minutes_base",
    "minutes_per_bed",
    "minutes_per_bath",
)


class RuleIn(Strict):
    base_cents: Cents
    per_bed_cents: Cents
    per_bath_cents: Cents
    minutes_base: Minutes
    minutes_per_bed: Minutes
    minutes_per_bath: Minutes


class PricingConfigIn(Strict):
    rules: Annotated[
        dict[CleaningType, RuleIn],
        Field(min_length=1, max_length=20, description="Per cleaning type, e.g. standard, deep, move_out"),
    ]
    min_total_cents: Cents = 0
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="Default: the org's")] | None = None


def config(message: booking_pb2.PricingConfig) -> dict[str, Any]:
    return {
        "id": message.id,
        "version": message.version,
        "currency": message.currency,
        "active": message.active,
        "used": message.used,
        "min_total_cents": message.min_total_cents,
        "rules": {
            rule.cleaning_type: {name: getattr(rule, name) for name in RULE_FIELDS} for rule in message.rules
        },
        "created_at": message.created_at.ToJsonString(),
    }


@router.get("/pricing-configs", summary="Pricing versions of your org, newest first")
async def list_pricing_configs(
    booking: Booking, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    response = await booking.ListPricingConfigs(booking_pb2.ListPricingConfigsRequest())
    return {"configs": [config(c) for c in response.configs]}


@router.post(
    "/pricing-configs", status_code=201, summary="Publish a new pricing version; it becomes active at once"
)
async def create_pricing_config(
    body: PricingConfigIn, booking: Booking, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    response = await booking.CreatePricingConfig(
        booking_pb2.CreatePricingConfigRequest(
            rules=[
                booking_pb2.PricingRule(cleaning_type=name, **rule.model_dump())
                for name, rule in body.rules.items()
            ],
            min_total_cents=body.min_total_cents,
            currency=body.currency or "",
        )
    )
    return config(response.config)
