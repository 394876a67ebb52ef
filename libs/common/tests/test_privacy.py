"""libs/common/privacy.py: masking for the VIEWER role, scrubbing a person's values out of free text,
and forgetting the published events that mention them (real Postgres, a schema of its own)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cws.common.v1.privacy_pb2 import Person
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import create_engine, func, insert, select, text

from libs.common.db import Database, OutboxTables, service_metadata
from libs.common.privacy import ERASED, Scrubber, forget_published_events, mask, mask_pii, needles, uuids
from libs.common.settings import sqlalchemy_url

APP_ROLE = "cws_app"


def test_mask_keeps_enough_to_tell_entries_apart_and_nothing_to_contact() -> None:
    assert mask("client_email", "jane.doe@example.com") == "j***@example.com"
    assert mask("phone", "+1 (555) 010-0199") == "***99"
    assert mask("phone", "12") == "***"
    assert mask("client_name", "Jane Doe") == "J***"
    assert mask("address", "12 Main St") == "***"
    assert mask("address", "") == ""
    assert mask("score", 9) == 9


def test_mask_pii_reaches_every_depth_and_only_pii_keys() -> None:
    details = {
        "score": 10,
        "recipient": "jane@example.com",
        "after": {"client_name": "Jane Doe", "total_cents": 12000, "items": [{"notes": "gate code 1234"}]},
        "to": ["a@example.com", "b@example.com"],
    }
    masked = mask_pii(details)
    assert masked == {
        "score": 10,
        "recipient": "j***@example.com",
        "after": {"client_name": "J***", "total_cents": 12000, "items": [{"notes": "***"}]},
        "to": ["a***@example.com", "b***@example.com"],
    }


def test_needles_are_case_folded_longest_first_and_skip_short_values() -> None:
    person = Person(emails=["Jane@Example.com"], pii_values=["Jane Doe", "Al", " 555 0100 ", ""])
    found = needles(person)
    assert found[0] == "Jane@Example.com" or found[0] == "jane@example.com"
    assert "Al" not in found and "" not in found
    assert {"jane doe", "Jane Doe", "555 0100", "jane@example.com"} <= set(found)
    assert [len(v) for v in found] == sorted((len(v) for v in found), reverse=True)


def test_scrubber_replaces_values_anywhere_in_json_and_says_whether_it_changed() -> None:
    scrubber = Scrubber(needles(Person(emails=["jane@example.com"], pii_values=["Jane Doe"])))
    value: dict[str, Any] = {
        "subject": "Booking for JANE DOE",
        "body": ["Hi Jane Doe,", {"reply_to": "Jane@Example.com"}],
        "total_cents": 12000,
    }
    scrubbed, changed = scrubber.scrub(value)
    assert changed
    assert scrubbed == {
        "subject": f"Booking for {ERASED}",
        "body": [f"Hi {ERASED},", {"reply_to": ERASED}],
        "total_cents": 12000,
    }
    assert scrubber.scrub(scrubbed) == (scrubbed, False)
    # A value that is part of the marker itself does not match the marker on the next run.
    short = Scrubber(["era", "ras"])
    once, changed = short.scrub("camera rasp")
    assert changed and short.scrub(once) == (once, False)
    assert Scrubber([]).scrub("Jane Doe") == ("Jane Doe", False)


def test_uuids_drops_what_is_not_a_uuid() -> None:
    good = uuid.uuid4()
    assert uuids([str(good), "nope", ""]) == [good]


# forget_published_events, against a schema of its own built like a service's migration would.


@pytest.fixture
async def events_schema(stack: Any) -> AsyncIterator[tuple[Database, OutboxTables]]:
    schema = f"privtest_{secrets.token_hex(4)}"
    metadata, tables = service_metadata(schema)
    engine = create_engine(sqlalchemy_url(stack.admin_url))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO {APP_ROLE}'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {APP_ROLE}')
        )
    db = Database(stack.app_url, schema=schema, tables=tables, pool_size=2)
    try:
        yield db, tables
    finally:
        await db.dispose()
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


async def test_forget_published_events_deletes_what_mentions_the_person_in_their_org_only(
    events_schema: tuple[Database, OutboxTables],
) -> None:
    db, tables = events_schema
    org, other_org = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    def event(org_id: uuid.UUID, body: str, published: bool) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "subject": "cws.privtest.lead.created",
            "payload": StringValue(value=body).SerializeToString(),
            "org_id": org_id,
            "published_at": now if published else None,
        }

    async with db.sessions() as session, session.begin():
        await session.execute(
            insert(tables.outbox),
            [
                event(org, "lead by Jane Doe <jane@example.com>", published=True),
                event(org, "booking for Zoë Ünicode", published=True),
                event(org, "someone else entirely", published=True),
                event(org, "pending for jane@example.com", published=False),
                event(other_org, "jane@example.com in another org", published=True),
            ],
        )
        await session.execute(
            insert(tables.dead_letters),
            [
                {
                    "id": uuid.uuid4(),
                    "consumer": "c",
                    "event_id": "e1",
                    "subject": "cws.privtest.lead.created",
                    "payload": StringValue(value="Jane Doe again").SerializeToString(),
                    "org_id": org,
                    "error": "boom",
                    "deliveries": 5,
                }
            ],
        )

    values = needles(Person(emails=["jane@example.com"], pii_values=["Jane Doe", "Zoë Ünicode"]))
    async with db.sessions() as session, session.begin():
        forgotten = await forget_published_events(session, tables, org, values)
    assert (forgotten.deleted, forgotten.unpublished) == (3, 1)

    async with db.sessions() as session:
        left = (await session.execute(select(tables.outbox.c.org_id, tables.outbox.c.payload))).all()
        dead_left = await session.scalar(select(func.count()).select_from(tables.dead_letters))
    bodies = sorted(StringValue.FromString(row.payload).value for row in left)
    assert bodies == [
        "jane@example.com in another org",
        "pending for jane@example.com",
        "someone else entirely",
    ]
    assert dead_left == 0

    async with db.sessions() as session, session.begin():
        again = await forget_published_events(session, tables, org, values)
    assert (again.deleted, again.unpublished) == (0, 1)
    async with db.sessions() as session, session.begin():
        nothing = await forget_published_events(session, tables, org, [])
    assert (nothing.deleted, nothing.unpublished) == (0, 0)
