"""Pricing configs and the estimator. Configs are versioned per org; a config an estimate used is
never changed (a database trigger enforces it): a price change is a new version."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument
from services.booking.models import pricing_configs

MAX_BEDS = 20
MAX_BATHS = 20.0

DEFAULT_RULES: dict[str, dict[str, int]] = {
    "standard": {
        "base_cents": 9000,
        "per_bed_cents": 2000,
        "per_bath_cents": 1500,
        "minutes_base": 90,
        "minutes_per_bed": 30,
        "minutes_per_bath": 25,
    },
    "deep": {
        "base_cents": 14000,
        "per_bed_cents": 3000,
        "per_bath_cents": 2500,
        "minutes_base": 150,
        "minutes_per_bed": 45,
        "minutes_per_bath": 40,
    },
    "move_out": {
        "base_cents": 18000,
        "per_bed_cents": 3500,
        "per_bath_cents": 3000,
        "minutes_base": 180,
        "minutes_per_bed": 50,
        "minutes_per_bath": 45,
    },
}
DEFAULT_MIN_TOTAL_CENTS = 9000


@dataclass(frozen=True)
class Line:
    code: str
    label: str
    quantity: float
    unit_cents: int
    amount_cents: int


@dataclass(frozen=True)
class Estimate:
    pricing_config_id: uuid.UUID
    version: int
    currency: str
    total_before_tax_cents: int
    estimated_minutes: int
    lines: list[Line] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pricing_config_id": str(self.pricing_config_id),
            "pricing_config_version": self.version,
            "currency": self.currency,
            "total_before_tax_cents": self.total_before_tax_cents,
            "estimated_minutes": self.estimated_minutes,
            "lines": [line.__dict__ for line in self.lines],
        }


def validate_inputs(
    beds: int, baths: float, cleaning_type: str, rules: dict[str, Any], prefix: str = ""
) -> None:
    problems = []
    if not 0 <= beds <= MAX_BEDS:
        problems.append(FieldViolation(f"{prefix}beds", f"must be between 0 and {MAX_BEDS}"))
    if not (0 <= baths <= MAX_BATHS) or not math.isfinite(baths) or (baths * 2) != int(baths * 2):
        problems.append(
            FieldViolation(f"{prefix}baths", f"must be between 0 and {MAX_BATHS:g} in steps of 0.5")
        )
    if cleaning_type not in rules:
        problems.append(
            FieldViolation(f"{prefix}cleaning_type", f"must be one of {', '.join(sorted(rules))}")
        )
    if problems:
        raise InvalidArgument("; ".join(f"{p.field} {p.description}" for p in problems), violations=problems)


def compute(config: Any, beds: int, baths: float, cleaning_type: str) -> Estimate:
    """The price of one job under one config: pure arithmetic in integer cents."""
    validate_inputs(beds, baths, cleaning_type, config.rules)
    rule = config.rules[cleaning_type]
    lines = [
        Line(
            "base",
            f"{cleaning_type.replace('_', ' ').title()} cleaning",
            1,
            rule["base_cents"],
            rule["base_cents"],
        ),
    ]
    if beds:
        lines.append(Line("bedrooms", "Bedrooms", beds, rule["per_bed_cents"], beds * rule["per_bed_cents"]))
    if baths:
        lines.append(
            Line(
                "bathrooms", "Bathrooms", baths, rule["per_bath_cents"], round(baths * rule["per_bath_cents"])
            )
        )
    subtotal = sum(line.amount_cents for line in lines)
    if subtotal < config.min_total_cents:
        lines.append(
            Line(
                "minimum",
                "Minimum job charge",
                1,
                config.min_total_cents - subtotal,
                config.min_total_cents - subtotal,
            )
        )
        subtotal = config.min_total_cents
    minutes = (
        rule["minutes_base"] + beds * rule["minutes_per_bed"] + math.ceil(baths * rule["minutes_per_bath"])
    )
    return Estimate(config.id, config.version, config.currency, subtotal, minutes, lines)


async def ensure_default_config(uow: UnitOfWork, currency: str) -> None:
    exists = await uow.session.scalar(select(pricing_configs.c.id).where(pricing_configs.c.active).limit(1))
    if exists is None:
        # Two first requests of a new org may race here; the unique keys let exactly one insert win.
        await uow.session.execute(
            pg_insert(pricing_configs)
            .values(
                id=uuid.uuid4(),
                org_id=uow.org_id,
                version=1,
                currency=currency,
                rules=DEFAULT_RULES,
                min_total_cents=DEFAULT_MIN_TOTAL_CENTS,
            )
            .on_conflict_do_nothing()
        )


async def active_config(uow: UnitOfWork) -> Any:
    return (await uow.session.execute(select(pricing_configs).where(pricing_configs.c.active))).one()


async def estimate(uow: UnitOfWork, beds: int, baths: float, cleaning_type: str) -> Estimate:
    config = await active_config(uow)
    result = compute(config, beds, baths, cleaning_type)
    if not config.used:
        await uow.session.execute(
            update(pricing_configs).where(pricing_configs.c.id == config.id).values(used=True)
        )
    return result
