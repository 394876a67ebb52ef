"""proto → JSON-ready dicts for responses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cws.booking.v1 import booking_pb2
from cws.iam.v1 import iam_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.problems import ProblemError
from libs.common.convert import to_ts


def tokens(message: iam_pb2.Tokens) -> dict[str, Any]:
    return {
        "access_token": message.access_token,
        "refresh_token": message.refresh_token,
        "token_type": message.token_type or "bearer",
        "expires_in": message.expires_in,
        "refresh_expires_in": message.refresh_expires_in,
        "mfa_verified": message.mfa_verified,
        "must_change_password": message.must_change_password,
        "org_id": message.org_id,
        "user_id": message.user_id,
        "role": message.role,
    }


def user(message: iam_pb2.User) -> dict[str, Any]:
    return {
        "id": message.id,
        "org_id": message.org_id,
        "email": message.email,
        "full_name": message.full_name,
        "role": message.role,
        "totp_enabled": message.totp_enabled,
        "must_change_password": message.must_change_password,
        "active": message.active,
        "created_at": message.created_at.ToJsonString() if message.created_at.seconds else None,
    }


def audit(entry: iam_pb2.AuditLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "before": MessageToDict(entry.before) if entry.HasField("before") else None,
        "after": MessageToDict(entry.after) if entry.HasField("after") else None,
        "request_id": entry.request_id,
        "break_glass_reason": entry.break_glass_reason or None,
        "break_glass_session_id": entry.break_glass_session_id or None,
        "created_at": entry.created_at.ToJsonString() if entry.created_at.seconds else None,
    }


def optional_time(message: Message, name: str) -> str | None:
    """A Timestamp field as RFC 3339, or None when the service left it unset."""
    stamp: Timestamp = getattr(message, name)
    return stamp.ToJsonString() if message.HasField(name) and (stamp.seconds or stamp.nanos) else None


def cents_to_amount(cents: int) -> float:
    return round(cents / 100, 2)


def estimate(message: booking_pb2.EstimateResponse) -> dict[str, Any]:
    return {
        "pricing_config_id": message.pricing_config_id,
        "pricing_config_version": message.pricing_config_version,
        "currency": message.currency,
        "total_before_tax": cents_to_amount(message.total_before_tax_cents),
        "total_before_tax_cents": message.total_before_tax_cents,
        "estimated_minutes": message.estimated_minutes,
        "breakdown": [
            {
                "code": line.code,
                "label": line.label,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_cents,
                "amount_cents": line.amount_cents,
                "amount": cents_to_amount(line.amount_cents),
            }
            for line in message.lines
        ],
    }


def lead(message: booking_pb2.Lead) -> dict[str, Any]:
    return {
        "lead_id": message.id,
        "name": message.name,
        "phone": message.phone,
        "email": message.email,
        "postal_code": message.postal_code,
        "structured_inputs": {
            "beds": message.structured_inputs.beds,
            "baths": message.structured_inputs.baths,
            "cleaning_type": message.structured_inputs.cleaning_type,
        },
        "estimate": estimate(message.estimate),
        "notes": message.notes,
        "status": message.status,
        "created_at": message.created_at.ToJsonString(),
    }


def _local(stamp: Timestamp, time_zone: str) -> str:
    return stamp.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(time_zone or "UTC")).isoformat()


def booking(message: booking_pb2.Booking) -> dict[str, Any]:
    return {
        "id": message.id,
        "lead_id": message.lead_id or None,
        "status": message.status,
        "starts_at": message.starts_at.ToJsonString(),
        "ends_at": message.ends_at.ToJsonString(),
        "time_zone": message.time_zone,
        "starts_at_local": _local(message.starts_at, message.time_zone),
        "ends_at_local": _local(message.ends_at, message.time_zone),
        "client_name": message.client_name,
        "client_email": message.client_email,
        "client_phone": message.client_phone,
        "address": message.address,
        "postal_code": message.postal_code,
        "cleaning_type": message.cleaning_type,
        "beds": message.beds,
        "baths": message.baths,
        "total_before_tax": cents_to_amount(message.total_before_tax_cents),
        "total_before_tax_cents": message.total_before_tax_cents,
        "currency": message.currency,
        "team_id": message.team_id or None,
        "worker_ids": list(message.worker_ids),
        "deposit_required": message.deposit_required,
        "deposit_paid": message.deposit_paid,
        "notes": message.notes,
        "cancel_reason": message.cancel_reason or None,
        "created_at": message.created_at.ToJsonString(),
    }


def timestamp(value: datetime, field: str) -> Timestamp:
    """`to_ts`, with a date a Timestamp cannot hold (or that overflows on the way to UTC) refused as
    422 naming the field."""
    try:
        return to_ts(value)
    except (OverflowError, ValueError):
        raise ProblemError(
            422,
            "validation_error",
            f"{field} is out of range",
            errors=[{"field": field, "message": "out of range"}],
        ) from None
