"""The booking and invoice an outbox row is about, read from its dedupe key's structured segments
(services/notify/subject_keys.py), and migration 0004's backfill of rows already there by the same
rule: a "booking" or "invoice" segment followed by a whole UUID segment, never a search for the id."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import psycopg
import pytest
from alembic import command

from libs.common.migrate import alembic_config, service_migration_dirs
from services.notify.subject_keys import Subjects, subjects_of
from tools.devstack import drop_database, ensure_database

BOOKING = uuid.UUID("0b5e1c3a-6f0e-4d5c-9a57-3f1c2d4e5f60")
INVOICE = uuid.UUID("1c6f2d4b-7a1f-4e6d-8b68-4a2d3e5f6a71")
PHOTO = uuid.UUID("2d7a3e5c-8b2a-4f7e-9c79-5b3e4f6a7b82")

KEYS: list[tuple[str, Subjects]] = [
    (f"email:booking_confirmed:booking:{BOOKING}", Subjects(booking_id=BOOKING)),
    (f"email:booking_reminder:booking:{BOOKING}:2026-12-02T09:00:00+00:00", Subjects(booking_id=BOOKING)),
    (f"email:invoice_sent:invoice:{INVOICE}:0badc0ffee", Subjects(invoice_id=INVOICE)),
    (
        f"email:photo_retake:booking:{BOOKING}:photo:{PHOTO}:2026-12-02T09:00:00.123456+00:00",
        Subjects(booking_id=BOOKING),
    ),
    (f"invoice:{INVOICE}:dunning:payment_failed", Subjects(invoice_id=INVOICE)),
    (f"invoice:{INVOICE}:sent:0badc0ffee", Subjects(invoice_id=INVOICE)),
    (f"email:x:booking:{BOOKING}:invoice:{INVOICE}", Subjects(booking_id=BOOKING, invoice_id=INVOICE)),
    # Upper-case hex is still the id (Postgres' uuid type reads it so too).
    (f"email:x:booking:{str(BOOKING).upper()}", Subjects(booking_id=BOOKING)),
    # No structured segment: a bare id, a lead, a photo, an event id are about no booking or invoice.
    (f"export:lead_created:lead:{BOOKING}", Subjects()),
    (f"photo:{PHOTO}:retake:2026-12-02T09:00:00+00:00", Subjects()),
    (f"email:client_login:event:{BOOKING}", Subjects()),
    (f"email:custom:{BOOKING}", Subjects()),
    ("digest:daily_ops:2026-12-02:jane@example.com", Subjects()),
    # Not a whole UUID segment: a prefix, a suffix, hex without dashes, braces.
    (f"email:x:booking:{BOOKING}x", Subjects()),
    (f"email:x:booking:x{BOOKING}", Subjects()),
    (f"email:x:booking:{BOOKING.hex}", Subjects()),
    (f"email:x:booking:{{{BOOKING}}}", Subjects()),
    (f"email:x:bookings:{BOOKING}", Subjects()),
    (f"email:x:my-booking:{BOOKING}", Subjects()),
    # The first id of each kind counts; the word followed by anything else is skipped.
    (f"email:x:booking:booking:{BOOKING}", Subjects(booking_id=BOOKING)),
    (f"email:x:booking:{BOOKING}:booking:{PHOTO}", Subjects(booking_id=BOOKING)),
    ("booking", Subjects()),
    ("", Subjects()),
]


@pytest.mark.parametrize(("key", "expected"), KEYS, ids=[k[:60] for k, _ in KEYS])
def test_subjects_of_a_dedupe_key(key: str, expected: Subjects) -> None:
    assert subjects_of(key) == expected


def test_the_backfill_reads_existing_rows_by_the_same_rule(stack: Any) -> None:
    """Rows written before 0004 (booking_id, invoice_id unknown) get them from their keys, exactly as
    subjects_of reads them."""
    name = f"{stack.admin_url.rsplit('/', 1)[1]}_notify_backfill_{secrets.token_hex(2)}"
    url = ensure_database(stack.admin_url, name)
    try:
        config = alembic_config(service_migration_dirs()["notify"], url)
        command.upgrade(config, "0003_stored_exports")
        org = uuid.uuid4()
        with psycopg.connect(url, autocommit=True) as conn:
            for key, _ in KEYS:
                if key:
                    conn.execute(
                        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload)"
                        " VALUES (%s, %s, 'email', %s, %s)",
                        (uuid.uuid4(), org, key, json.dumps({})),
                    )
        command.upgrade(config, "head")
        with psycopg.connect(url) as conn:
            found = {
                key: Subjects(booking_id=b, invoice_id=i)
                for key, b, i in conn.execute(
                    "SELECT dedupe_key, booking_id, invoice_id FROM notify.outbox_events WHERE org_id = %s",
                    (org,),
                ).fetchall()
            }
        assert found == {key: expected for key, expected in KEYS if key}
    finally:
        drop_database(stack.admin_url, name)
