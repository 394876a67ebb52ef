"""gcal.py's rules alone (no services): which events block time and when, the cursor, the endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.integrations import gcal
from services.integrations.settings import IntegrationsSettings

LO = datetime(2031, 1, 1, tzinfo=UTC)
HI = LO + timedelta(days=120)


def test_all_day_events_block_the_calendars_local_day():
    event = {"start": {"date": "2031-02-10"}, "end": {"date": "2031-02-11"}}
    start, end = gcal._busy_period(event, "America/Edmonton", LO, HI) or (None, None)
    assert start == datetime(2031, 2, 10, 7, tzinfo=UTC) and end == datetime(2031, 2, 11, 7, tzinfo=UTC)
    # An unknown zone is read as UTC rather than failing the pass.
    start, _ = gcal._busy_period(event, "Nowhere/Special", LO, HI) or (None, None)
    assert start == datetime(2031, 2, 10, tzinfo=UTC)


def test_only_events_that_block_time_in_the_window_are_busy():
    timed = {
        "start": {"dateTime": "2031-02-10T09:00:00-07:00"},
        "end": {"dateTime": "2031-02-10T10:00:00-07:00"},
    }
    assert gcal._busy_period(timed, "UTC", LO, HI) == (
        datetime(2031, 2, 10, 16, tzinfo=UTC),
        datetime(2031, 2, 10, 17, tzinfo=UTC),
    )
    assert gcal._busy_period({**timed, "transparency": "transparent"}, "UTC", LO, HI) is None
    assert gcal._busy_period({**timed, "status": "cancelled"}, "UTC", LO, HI) is None
    assert gcal._busy_period({**timed, "status": "tentative"}, "UTC", LO, HI) is not None
    assert gcal._busy_period(timed, "UTC", HI, HI + timedelta(days=1)) is None  # before the window
    assert gcal._busy_period({"start": {}, "end": {}}, "UTC", LO, HI) is None  # unreadable: skipped
    backwards = {"start": timed["end"], "end": timed["start"]}
    assert gcal._busy_period(backwards, "UTC", LO, HI) is None


def test_own_events_are_known_by_their_private_property():
    assert gcal._own_booking({"extendedProperties": {"private": {"cws_booking_id": "b-1"}}}) == "b-1"
    assert gcal._own_booking({"extendedProperties": {"shared": {"cws_booking_id": "b-1"}}}) is None
    assert gcal._own_booking({}) is None


def test_the_cursor_round_trips_and_a_bad_one_starts_afresh():
    cursor = gcal.Cursor(push=LO, sync_token="tok", full_at=LO - timedelta(hours=1), teams="abc")
    assert gcal.Cursor.parse(cursor.dump()) == cursor
    assert gcal.Cursor.parse("") == gcal.Cursor()
    assert gcal.Cursor.parse("2031-01-01T00:00:00+00:00") == gcal.Cursor()  # not JSON: a full sync
    assert gcal.Cursor.parse('{"push": "yesterday"}') == gcal.Cursor()


def test_the_api_endpoint_is_the_root_plus_calendar_v3():
    settings = IntegrationsSettings(google_calendar_api_url="https://www.googleapis.com/")
    assert gcal.api_endpoint(settings) == "https://www.googleapis.com/calendar/v3/"
    settings = IntegrationsSettings(google_calendar_api_url="http://127.0.0.1:9999")
    assert gcal.api_endpoint(settings) == "http://127.0.0.1:9999/calendar/v3/"
