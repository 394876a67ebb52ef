"""What every adapter shares: the row it sends, the failures it raises, and the email it composes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from services.notify.settings import NotifySettings


class DeliveryFailure(Exception):
    """A send that did not go through. `permanent` ones are not retried: the row goes dead at once."""

    permanent = False

    def __init__(self, message: str, *, reached_remote: bool = True) -> None:
        super().__init__(message)
        # False when we refused before talking to the remote (allowlist, bad payload): such a failure
        # says nothing about the remote's health, so the circuit breaker ignores it.
        self.reached_remote = reached_remote


class TransientFailure(DeliveryFailure):
    """Server down, timeout, 4xx SMTP reply, HTTP 408/429/5xx: try again later."""


class PermanentFailure(DeliveryFailure):
    """Refused for good: SMTP 5xx (a bounce), HTTP 4xx, a target the SSRF guard refuses."""

    permanent = True

    def __init__(self, message: str, *, reached_remote: bool = True, bounced: bool = False) -> None:
        super().__init__(message, reached_remote=reached_remote)
        self.bounced = bounced


@dataclass(frozen=True)
class Outbound:
    """One claimed outbox row, as an adapter needs it."""

    id: uuid.UUID
    org_id: uuid.UUID
    kind: str
    target: str
    payload: dict[str, Any]
    # Where the send was asked for (tracing): the enqueuing span's traceparent and request id.
    trace_context: str | None = None
    request_id: str | None = None


Send = Callable[[Outbound], Awaitable[None]]


class Adapter(Protocol):
    # Names the adapter's circuit breaker (and its metrics label).
    name: str

    def lane(self) -> AbstractAsyncContextManager[Send]:
        """A sender for one delivery lane (an SMTP lane holds one connection for its lifetime)."""
        ...

    async def close(self) -> None: ...


class StatelessLane:
    """lane() for adapters whose sends share one pooled client (HTTP)."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def __aenter__(self) -> Send:
        return self._send

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    from_email: str
    from_name: str
    message_id: str


def message_id(outbox_id: uuid.UUID, from_email: str) -> str:
    """Derived from the row, so a send repeated after a crash carries the same Message-ID and the
    recipient's mail system can tell it is one message."""
    domain = from_email.rsplit("@", 1)[-1] if "@" in from_email else "localhost"
    return f"<{outbox_id}@{domain}>"


def compose_email(row: Outbound, settings: NotifySettings) -> Email:
    payload = row.payload
    to = str(payload.get("to") or row.target or "").strip()
    if not to or "@" not in to:
        raise PermanentFailure("email payload has no valid recipient ('to')", reached_remote=False)
    return Email(
        to=to,
        subject=str(payload.get("subject") or ""),
        text=str(payload.get("text") or ""),
        from_email=settings.email_from,
        from_name=str(payload.get("from_name") or settings.email_from_name or ""),
        message_id=message_id(row.id, settings.email_from),
    )
