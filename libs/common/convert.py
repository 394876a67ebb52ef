"""Small conversions every servicer needs at its edge: ids, timestamps and paging, each turning
bad input into an InvalidArgument that names the field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from libs.common.errors import invalid

MAX_PAGE = 200
DEFAULT_PAGE = 50


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """A UUID from a request field; `field` is named in the error."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise invalid(field, "must be a UUID") from None


def to_ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def to_ts_or_none(value: datetime | None) -> Timestamp | None:
    """For optional message fields: None leaves the field unset."""
    return None if value is None else to_ts(value)


def from_ts(stamp: Timestamp, field: str) -> datetime:
    """A required timestamp field; unset (zero) is refused as missing."""
    if not stamp.seconds and not stamp.nanos:
        raise invalid(field, "is required")
    return stamp.ToDatetime(tzinfo=UTC)


def from_ts_or_none(stamp: Timestamp) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def page(limit: int, offset: int, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> tuple[int, int]:
    """(limit, offset) of a list request: 0 means the default, beyond `maximum` is refused."""
    if not 0 <= limit <= maximum:
        raise invalid("limit", f"must be between 1 and {maximum}")
    if offset < 0:
        raise invalid("offset", "must not be negative")
    return limit or default, offset
