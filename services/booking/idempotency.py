"""Idempotency keys bound to the request that first used them.

A key alone proves nothing about who sends it: on the anonymous lead intake anyone may send any key.
So each row stores a fingerprint of its request beside its key, and a later request with the key is
answered with that row only when its own fingerprint is the same. Any other request gets a 422 that
says nothing of the first one, as the IETF draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header, "Idempotency Fingerprint" and "Error Scenarios": reuse
of a key with a different request payload is answered 422) asks.

Rows stored before the fingerprint existed (NULL) are never replayed: nothing shows that the retry
is the request that made them, and replaying them is the leak this closes (docs/booking.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from libs.common.errors import FieldViolation, InvalidArgument
from services.booking.models import Record


def fingerprint(**fields: Any) -> str:
    """sha256 (hex) of a canonical JSON of the fields that define the resource: sorted keys, no
    whitespace, UTF-8, datetimes as UTC ISO 8601. The same request always gives the same value."""

    def canonical(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return value

    payload = json.dumps(
        {name: canonical(value) for name, value in fields.items()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def replay(row: Record, request_fingerprint: str) -> Record:
    """The row to answer a repeated key with, when the request is the one that made it; else 422."""
    stored = row.idempotency_fingerprint
    if stored is None or not hmac.compare_digest(stored, request_fingerprint):
        raise InvalidArgument(
            "this Idempotency-Key was already used for a different request; "
            "send a new key with a new request",
            code="idempotency_key_reused",
            violations=[FieldViolation("idempotency_key", "was already used for a different request")],
        )
    return row
