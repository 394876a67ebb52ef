"""Personal data, the same way in every service: which keys hold it (masked for the VIEWER role in the
timelines), how free text is scrubbed of a person being erased, and how a service forgets the
published events that mention them (seed 002's data export/delete playbook, issue 13).

Values are scrubbed by what they are, not where they sit: an audit entry's before/after, an email's
stored body or a Stripe event's facts may carry a name anywhere, so the erasure walks the JSON and
replaces every string that contains one of the person's values."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import LargeBinary, bindparam, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import OutboxTables

# What an erased value becomes where the row must stay (an invoice keeps its totals, not its client).
ERASED = "[erased]"

# Keys whose values are personal data wherever they appear in a timeline entry's details (and in an
# export's records). The gateway masks them for the VIEWER role; a service never puts personal data
# anywhere else in an entry (its summary, kind or actor).
PII_KEYS = frozenset(
    {
        "name",
        "client_name",
        "email",
        "client_email",
        "recipient",
        "to",
        "target",
        "phone",
        "client_phone",
        "address",
        "postal_code",
        "comment",
        "notes",
        "subject",
        "reference",
    }
)

# Shorter values are not erased inside free text: "Al" or "12" would wipe unrelated words.
MIN_NEEDLE_LENGTH = 3
_EMAIL = re.compile(r"^([^@]?)[^@]*@(.+)$")


def mask(key: str, value: Any) -> Any:
    """A VIEWER's view of one personal value: enough to tell two entries apart, not to contact anyone."""
    if not isinstance(value, str) or not value:
        return value
    match = _EMAIL.match(value)
    if match:
        return f"{match.group(1)}***@{match.group(2)}"
    if key in ("phone", "client_phone"):
        digits = re.sub(r"\D", "", value)
        return f"***{digits[-2:]}" if len(digits) >= 4 else "***"
    if key in ("name", "client_name"):
        return f"{value[0]}***"
    return "***"


def mask_pii(value: Any, key: str = "") -> Any:
    """`value` with every PII_KEYS entry masked, at any depth of dicts and lists."""
    if isinstance(value, Mapping):
        return {k: (mask_value_tree(k, v) if k in PII_KEYS else mask_pii(v, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_pii(item, key) for item in value]
    return value


def mask_value_tree(key: str, value: Any) -> Any:
    if isinstance(value, list):
        return [mask_value_tree(key, item) for item in value]
    if isinstance(value, Mapping):
        return {k: mask_value_tree(k, v) for k, v in value.items()}
    return mask(key, value)


def needles(person: Person) -> list[str]:
    """The strings to erase wherever they appear: the person's emails and identifying values, each as
    given and in lower case, longest first (so "Jane Doe" goes before a "Jane" could split it)."""
    found: set[str] = set()
    for value in (*person.emails, *person.pii_values):
        text = value.strip()
        if len(text) >= MIN_NEEDLE_LENGTH:
            found.update({text, text.lower()})
    return sorted(found, key=lambda v: (-len(v), v))


def _pattern(values: Sequence[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)


@dataclass
class Scrubber:
    """Replaces the person's values in strings, at any depth of JSON; counts what it changed."""

    values: Sequence[str]

    def __post_init__(self) -> None:
        self._pattern = _pattern(self.values)

    def contains(self, value: Any) -> bool:
        return self.scrub(value)[1]

    def scrub(self, value: Any) -> tuple[Any, bool]:
        """(the value with every occurrence replaced by ERASED, whether anything changed)."""
        if self._pattern is None:
            return value, False
        if isinstance(value, str):
            # Around earlier markers only, so a short value that is part of "[erased]" itself ("era")
            # does not match the marker again and a second run changes nothing.
            pattern = self._pattern
            replaced = ERASED.join(pattern.sub(ERASED, part) for part in value.split(ERASED))
            return replaced, replaced != value
        if isinstance(value, Mapping):
            changed = False
            out: dict[str, Any] = {}
            for k, v in value.items():
                out[k], hit = self.scrub(v)
                changed = changed or hit
            return out, changed
        if isinstance(value, list):
            items = [self.scrub(item) for item in value]
            return [item for item, _ in items], any(hit for _, hit in items)
        return value, False


def uuids(values: Iterable[str]) -> list[uuid.UUID]:
    """The valid UUIDs among `values` (a Person's ids come over the wire as text)."""
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class ForgottenEvents:
    deleted: int
    # Events that mention the person but are not published yet: the step must run again later,
    # once the relay has published them (deleting them would lose them for their consumers).
    unpublished: int


async def forget_published_events(
    session: AsyncSession, tables: OutboxTables, org_id: uuid.UUID, values: Sequence[str]
) -> ForgottenEvents:
    """Delete this service's published outbox events and dead letters of `org_id` whose payload
    mentions one of `values` (protobuf keeps strings as UTF-8 bytes, so a byte search finds them).

    The streams themselves keep a published event until its max age (libs/common/bus.py,
    STREAM_MAX_AGE_DAYS): JetStream cannot delete by content, so that is when the suite has forgotten
    the person everywhere; docs/operations.md says so."""
    if not values:
        return ForgottenEvents(0, 0)
    outbox, dead = tables.outbox, tables.dead_letters

    def mentions(column: str) -> Any:
        # position(bytea IN bytea): SQLAlchemy has no spelling of it, so a bound text fragment.
        return or_(
            *(
                text(f"position(:v{i} IN {column}) > 0").bindparams(
                    bindparam(f"v{i}", value.encode(), type_=LargeBinary)
                )
                for i, value in enumerate(values)
            )
        )

    unpublished = await session.scalar(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.org_id == org_id, outbox.c.published_at.is_(None), mentions("payload"))
    )
    gone = await session.execute(
        delete(outbox).where(
            outbox.c.org_id == org_id, outbox.c.published_at.is_not(None), mentions("payload")
        )
    )
    dead_gone = await session.execute(delete(dead).where(dead.c.org_id == org_id, mentions("payload")))
    deleted = (gone.rowcount or 0) + (dead_gone.rowcount or 0)  # type: ignore[attr-defined]
    return ForgottenEvents(deleted, int(unpublished or 0))
