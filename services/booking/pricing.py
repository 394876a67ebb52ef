"""Pricing configs and the estimator. Configs are versioned per org; a config an estimate used is
never changed (a database trigger enforces it): a price change is a new version."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument
from services.booking.models import Record, pricing_configs

MAX_BEDS = 20
MAX_BATHS = 20.0

# Bounds of a new pricing version (a typo must not price a job at a million dollars silently).
MAX_CENTS = 10_000_000
MAX_MINUTES = 1_440
MAX_CLEANING_TYPES = 20
PRICE_FIELDS = ("base_cents", "per_bed_cents", "per_bath_cents")
MINUTE_FIELDS = ("minutes_base", "minutes_per_bed", "minutes_per_bath")
RULE_FIELDS = PRICE_FIELDS + MINUTE_FIELDS
_CLEANING_TYPE = re.compile(r"^[a-z_]{1,20}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

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
        raise InvalidArgument.of(problems)


def compute(config: Record, beds: int, baths: float, cleaning_type: str) -> Estimate:
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
        await _insert_default_config(uow, currency)


async def _insert_default_config(uow: UnitOfWork, currency: str) -> None:
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


async def active_config(uow: UnitOfWork, default_currency: str) -> Record:
    """The org's active pricing config. An org without one (new here) first gets the default rules,
    in `default_currency` (its profile's)."""
    query = select(pricing_configs).where(pricing_configs.c.active)
    found = (await uow.session.execute(query)).first()
    if found is None:
        await _insert_default_config(uow, default_currency)
        found = (await uow.session.execute(query)).one()
    return found


async def quote(uow: UnitOfWork, config: Record, beds: int, baths: float, cleaning_type: str) -> Estimate:
    """The price under `config`, which from now on is used (its rules then never change)."""
    result = compute(config, beds, baths, cleaning_type)
    if not config.used:
        await uow.session.execute(
            update(pricing_configs).where(pricing_configs.c.id == config.id).values(used=True)
        )
    return result


async def estimate(
    uow: UnitOfWork, beds: int, baths: float, cleaning_type: str, *, default_currency: str
) -> Estimate:
    """The price under the org's active config."""
    return await quote(uow, await active_config(uow, default_currency), beds, baths, cleaning_type)


# --- versions -----------------------------------------------------------------------------------


async def list_configs(uow: UnitOfWork) -> list[Record]:
    """Every version of this org's pricing, newest first."""
    query = (
        select(pricing_configs)
        .where(pricing_configs.c.org_id == uow.org_id)
        .order_by(pricing_configs.c.version.desc())
    )
    return list((await uow.session.execute(query)).all())


def validate_config(
    rules: list[tuple[str, dict[str, int]]], min_total_cents: int, currency: str
) -> dict[str, dict[str, int]]:
    """The rules as stored, or InvalidArgument naming every bad field."""
    problems: list[FieldViolation] = []
    if not rules:
        problems.append(FieldViolation("rules", "must name at least one cleaning type"))
    if len(rules) > MAX_CLEANING_TYPES:
        problems.append(FieldViolation("rules", f"may name at most {MAX_CLEANING_TYPES} cleaning types"))
    checked: dict[str, dict[str, int]] = {}
    for name, rule in rules:
        if not _CLEANING_TYPE.match(name):
            problems.append(FieldViolation(f"rules.{name[:40]}", "cleaning type must match [a-z_]{1,20}"))
            continue
        if name in checked:
            problems.append(FieldViolation(f"rules.{name}", "is given twice"))
            continue
        for key in RULE_FIELDS:
            value = rule.get(key)
            limit = MAX_CENTS if key in PRICE_FIELDS else MAX_MINUTES
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                problems.append(
                    FieldViolation(f"rules.{name}.{key}", f"must be an integer from 0 to {limit}")
                )
        checked[name] = {key: rule.get(key, 0) for key in RULE_FIELDS}
    if not 0 <= min_total_cents <= MAX_CENTS:
        problems.append(FieldViolation("min_total_cents", f"must be an integer from 0 to {MAX_CENTS}"))
    if currency and not _CURRENCY.match(currency):
        problems.append(FieldViolation("currency", "must be three upper-case letters, e.g. CAD"))
    if problems:
        raise InvalidArgument.of(problems)
    return checked


async def create_config(
    uow: UnitOfWork,
    rules: list[tuple[str, dict[str, int]]],
    min_total_cents: int,
    currency: str,
    default_currency: str,
) -> Record:
    """A new version (max + 1) that becomes the active one in this same transaction. Used versions
    stay as they are (the trigger allows turning `active` off), so leads keep their snapshot."""
    checked = validate_config(rules, min_total_cents, currency)
    # One new version at a time per org: concurrent creations would pick the same number.
    await uow.session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('booking.pricing_configs:' || :org, 0))"),
        {"org": str(uow.org_id)},
    )
    version = await uow.session.scalar(
        select(func.coalesce(func.max(pricing_configs.c.version), 0)).where(
            pricing_configs.c.org_id == uow.org_id
        )
    )
    # The partial unique index allows one active config per org: the old one steps down first.
    await uow.session.execute(
        update(pricing_configs)
        .where(pricing_configs.c.org_id == uow.org_id, pricing_configs.c.active)
        .values(active=False)
    )
    created = await uow.session.execute(
        pg_insert(pricing_configs)
        .values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            version=int(version or 0) + 1,
            currency=currency or default_currency,
            rules=checked,
            min_total_cents=min_total_cents,
            active=True,
        )
        .returning(*pricing_configs.c)
    )
    return created.one()
