"""Events as code: a subject paired with its protobuf message type, and what a consumer receives.

A service's `events.py` declares what it publishes (`BOOKING_CONFIRMED = Event(...)`) and what it
consumes (`Consumer(...)`, `Broadcast(...)`). `UnitOfWork.add_event` refuses a message of the wrong
type, and consumers get the decoded message, so neither a subject nor a payload is ever a guess.

Services never import each other: a service that consumes another's event declares the same
`Event` (same subject, same message) in its own `events.py`, and tests/test_event_catalogue.py
checks every such declaration against the producer's and proto/EVENTS.md against all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cws.common.v1 import audit_pb2
from google.protobuf.message import Message

if TYPE_CHECKING:
    from libs.common.db import UnitOfWork

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Event(Generic[M]):
    """`cws.<service>.<aggregate>.<event>` and the message every event on it carries."""

    subject: str
    message: type[M]
    doc: str = ""

    def __post_init__(self) -> None:
        parts = self.subject.split(".")
        if len(parts) != 4 or parts[0] != "cws" or not all(parts):
            raise ValueError(f"subject {self.subject!r} is not cws.<service>.<aggregate>.<event>")

    @property
    def producer(self) -> str:
        return self.subject.split(".")[1]

    def check(self, message: Message) -> M:
        """The message, if it is this event's type; a TypeError names both otherwise."""
        if type(message) is not self.message:
            raise TypeError(
                f"{self.subject} carries {self.message.DESCRIPTOR.full_name}, "
                f"not {message.DESCRIPTOR.full_name}"
            )
        return message  # type: ignore[return-value]

    def decode(self, data: bytes) -> M:
        return self.message.FromString(data)


@dataclass(frozen=True)
class EventMeta:
    """What the CloudEvents-style headers say about one delivered event."""

    id: str
    subject: str
    org_id: str
    request_id: str
    time: datetime

    @classmethod
    def from_headers(cls, subject: str, headers: dict[str, str] | None) -> EventMeta:
        headers = headers or {}
        try:
            time = datetime.fromisoformat(headers.get("ce-time", "")).astimezone(UTC)
        except ValueError:
            time = datetime.now(UTC)
        return cls(
            id=headers.get("ce-id") or headers.get("Nats-Msg-Id") or "",
            subject=subject,
            org_id=headers.get("cws-org-id", ""),
            request_id=headers.get("cws-request-id", ""),
            time=time,
        )


Handler = Callable[["UnitOfWork", Any, EventMeta], Awaitable[None]]
BroadcastHandler = Callable[[Any, EventMeta], Awaitable[None]]


@dataclass(frozen=True)
class Consumer(Generic[M]):
    """A durable consumer: `handler(uow, message, meta)` runs once per event id, in the event's org,
    its effects committed with the inbox row (libs/common/events.py). `name` is the durable name."""

    name: str
    event: Event[M]
    handler: Callable[[UnitOfWork, M, EventMeta], Awaitable[None]]
    doc: str = ""
    max_deliver: int = 5
    # Up to this many events in one transaction (each with its inbox row), acked after the commit;
    # 1 is one transaction per event. Opt-in: a failure rolls the whole batch back and replays it one
    # event at a time (libs/common/events.py), so only for handlers whose effects outside the
    # database (calls to other services) may run twice.
    batch: int = 1


@dataclass(frozen=True)
class Broadcast(Generic[M]):
    """An ordered, ephemeral subscription that every replica of a service hears (not one of them,
    as with a durable consumer): for in-process caches, which each replica must empty itself.
    It replays `replay_seconds` of history after every (re)connect so nothing sent meanwhile is
    missed; handlers must therefore be idempotent."""

    name: str
    event: Event[M]
    handler: Callable[[M, EventMeta], Awaitable[None]]
    doc: str = ""
    replay_seconds: float = 60.0


def audit_event(service: str) -> Event[audit_pb2.AdminAuditRecorded]:
    """cws.<service>.audit.recorded: raised by the unit of work for every admin write (iam consumes)."""
    return Event(
        f"cws.{service}.audit.recorded",
        audit_pb2.AdminAuditRecorded,
        doc="an admin or service write, raised by the unit of work",
    )
