"""What an outbox row is about, read from its dedupe key's structured segments (issue 13).

Callers build keys as ':'-separated segments in which a kind names the id after it:
`email:booking_confirmed:booking:<id>`, `email:invoice_sent:invoice:<id>:<hash>`,
`email:photo_retake:booking:<id>:photo:<id>:<ts>`, `invoice:<id>:dunning:payment_failed`. The enqueue
stores the booking and invoice so found in their own columns, so the timelines and the erasure match
rows by an indexed equality, never by searching the key's text for a bare id (which would also match
an id that happens to sit anywhere else in some key)."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

# The segment that names what the next segment is the id of.
BOOKING = "booking"
INVOICE = "invoice"


@dataclass(frozen=True)
class Subjects:
    booking_id: uuid.UUID | None = None
    invoice_id: uuid.UUID | None = None


def _uuid(segment: str) -> uuid.UUID | None:
    # uuid.UUID also takes braces, "urn:uuid:" and hex without dashes; a key's id segment is the
    # canonical text form only, so anything else is no id.
    if len(segment) != 36:
        return None
    try:
        value = uuid.UUID(segment)
    except ValueError:
        return None
    return value if str(value) == segment.lower() else None


def subjects_of(dedupe_key: str) -> Subjects:
    """The first booking and the first invoice the key names (None where it names none)."""
    segments = dedupe_key.split(":")
    found: dict[str, uuid.UUID] = {}
    for name, following in itertools.pairwise(segments):
        if name in (BOOKING, INVOICE) and name not in found:
            value = _uuid(following)
            if value is not None:
                found[name] = value
    return Subjects(booking_id=found.get(BOOKING), invoice_id=found.get(INVOICE))
