"""The event catalogue is code: every service's events.py, checked against each other and against
proto/EVENTS.md, so a subject, its message type and its consumers are never written down twice."""

from __future__ import annotations

from pathlib import Path

from tools import events_catalogue

ROOT = Path(__file__).resolve().parents[1]


def test_every_service_declares_its_events() -> None:
    services = [p.name for p in (ROOT / "services").iterdir() if (p / "__main__.py").exists()]
    missing = [name for name in services if not (ROOT / "services" / name / "events.py").exists()]
    assert not missing, f"services without events.py: {missing}"


def test_consumed_events_match_what_their_producer_publishes() -> None:
    assert events_catalogue.problems(events_catalogue.load()) == []


def test_a_consumer_reading_another_message_type_is_caught() -> None:
    catalogue = events_catalogue.load()
    booking = next(entry for entry in catalogue if entry.service == "booking")
    iam = next(entry for entry in catalogue if entry.service == "iam")
    wrong = events_catalogue.Event(iam.published[0].subject, booking.published[0].message)
    booking.subscribers.append(events_catalogue.Subscriber("booking", "durable", "x", wrong, "x"))
    assert any("reads" in problem for problem in events_catalogue.problems(catalogue))


def test_events_md_is_generated_from_the_declarations() -> None:
    current = events_catalogue.CATALOGUE.read_text()
    fresh = events_catalogue.rewritten(current, events_catalogue.render(events_catalogue.load()))
    assert fresh == current, "proto/EVENTS.md is out of date: run `python -m tools.events_catalogue`"


def test_durable_consumer_names_are_unique() -> None:
    names = [s.name for entry in events_catalogue.load() for s in entry.subscribers if s.kind == "durable"]
    assert len(names) == len(set(names)), names
