"""tools/fake_google.py as google-api-python-client sees it: the Calendar v3 behaviour gcal-sync relies
on (so a sync test that passes against the fake means what it would against Google)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import google_auth_httplib2
import httplib2
import httpx
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tools.fake_oauth import CLIENT_ID, CLIENT_SECRET, s256

REDIRECT = "https://console.cws.test/cb"


def google_user(base_url: str) -> Any:
    """A fresh Google user (one OAuth grant) and the calendar service as that user."""
    verifier = secrets.token_urlsafe(40)
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "s",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "scope": "https://www.googleapis.com/auth/calendar",
    }
    answer = httpx.post(f"{base_url}/oauth/authorize?{urlencode(query)}", data={"decision": "allow"})
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    tokens = httpx.post(
        f"{base_url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    ).json()
    return service(base_url, tokens["access_token"])


def service(base_url: str, token: str) -> Any:
    transport = google_auth_httplib2.AuthorizedHttp(
        Credentials(token), http=httplib2.Http(timeout=10), refresh_status_codes=()
    )
    return build(
        "calendar",
        "v3",
        http=transport,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": f"{base_url}/calendar/v3/"},
    )


def when(hours: float) -> dict[str, str]:
    moment = datetime(2031, 5, 1, tzinfo=UTC) + timedelta(hours=hours)
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


def status_of(call: Any) -> tuple[int, str]:
    with pytest.raises(HttpError) as caught:
        call.execute()
    details = caught.value.error_details
    return caught.value.resp.status, details[0]["reason"] if isinstance(details, list) and details else ""


def test_accounts_calendars_and_events_as_the_client_library_uses_them(fake_google):
    me, other = google_user(fake_google.base_url), google_user(fake_google.base_url)
    mine = me.calendarList().list().execute()["items"]
    assert [c.get("primary", False) for c in mine] == [True, False]
    calendar = mine[1]["id"]
    theirs = {c["id"] for c in other.calendarList().list().execute()["items"]}
    assert calendar not in theirs
    # Another user cannot see my calendar; no token at all is a 401.
    assert status_of(other.events().list(calendarId=calendar)) == (404, "notFound")
    assert status_of(service(fake_google.base_url, "at-nonsense").calendarList().list())[0] == 401

    body = {"id": "a0b1c2d3e4", "summary": "Job", "start": when(1), "end": when(2)}
    made = me.events().insert(calendarId=calendar, body=body).execute()
    assert made["id"] == "a0b1c2d3e4" and made["status"] == "confirmed" and made["etag"]
    assert status_of(me.events().insert(calendarId=calendar, body=body)) == (409, "duplicate")
    bad = {**body, "id": "not-base32hex!"}
    assert status_of(me.events().insert(calendarId=calendar, body=bad))[0] == 400

    # PATCH merges objects; PUT replaces; an old etag in If-Match is refused.
    patched = (
        me.events()
        .patch(
            calendarId=calendar,
            eventId="a0b1c2d3e4",
            body={"extendedProperties": {"private": {"a": "1"}}},
        )
        .execute()
    )
    patched = (
        me.events()
        .patch(
            calendarId=calendar, eventId="a0b1c2d3e4", body={"extendedProperties": {"private": {"b": "2"}}}
        )
        .execute()
    )
    assert patched["extendedProperties"]["private"] == {"a": "1", "b": "2"} and patched["summary"] == "Job"
    assert patched["sequence"] == 2 and patched["etag"] != made["etag"]
    stale = me.events().update(calendarId=calendar, eventId="a0b1c2d3e4", body={**body, "summary": "X"})
    stale.headers["If-Match"] = made["etag"]
    assert status_of(stale) == (412, "conditionNotMet")
    replaced = (
        me.events()
        .update(calendarId=calendar, eventId="a0b1c2d3e4", body={**body, "summary": "New"})
        .execute()
    )
    assert replaced["summary"] == "New" and "extendedProperties" not in replaced

    # A deleted event is still got (cancelled), deleted twice is a 410, and PUT brings it back.
    me.events().delete(calendarId=calendar, eventId="a0b1c2d3e4").execute()
    assert me.events().get(calendarId=calendar, eventId="a0b1c2d3e4").execute()["status"] == "cancelled"
    assert status_of(me.events().delete(calendarId=calendar, eventId="a0b1c2d3e4")) == (410, "deleted")
    back = me.events().update(calendarId=calendar, eventId="a0b1c2d3e4", body=body).execute()
    assert back["status"] == "confirmed"


def test_listing_windows_deleted_events_pages_and_sync_tokens(fake_google):
    me = google_user(fake_google.base_url)
    calendar = me.calendarList().list().execute()["items"][1]["id"]
    for hour in range(0, 10):
        me.events().insert(
            calendarId=calendar, body={"summary": f"E{hour}", "start": when(hour), "end": when(hour + 1)}
        ).execute()

    def listing(**params: Any) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
        request = me.events().list(calendarId=calendar, singleEvents=True, **params)
        items, pages, last = [], 0, {}
        while request is not None:
            last = request.execute()
            items += last["items"]
            pages += 1
            request = me.events().list_next(request, last)
        return items, last, pages

    items, last, pages = listing()
    assert len(items) == 10 and pages == 3 and "nextSyncToken" in last  # 4 a page
    # timeMin bounds the end, timeMax the start (both exclusive), as Google's do.
    items, _, _ = listing(timeMin=when(3)["dateTime"], timeMax=when(6)["dateTime"])
    assert [e["summary"] for e in items] == ["E3", "E4", "E5"]

    first = items[0]
    me.events().delete(calendarId=calendar, eventId=first["id"]).execute()
    assert len(listing()[0]) == 9 and len(listing(showDeleted=True)[0]) == 10
    # Incremental: only the change, deleted ones included; the window is not allowed with it.
    changes, after, _ = listing(syncToken=last["nextSyncToken"])
    assert [(e["id"], e["status"]) for e in changes] == [(first["id"], "cancelled")]
    assert (
        status_of(
            me.events().list(
                calendarId=calendar, syncToken=after["nextSyncToken"], timeMin=when(0)["dateTime"]
            )
        )[0]
        == 400
    )
    assert listing(syncToken=after["nextSyncToken"])[0] == []
    fake_google.control("invalidate-sync-tokens", {"calendar_id": calendar})
    assert status_of(me.events().list(calendarId=calendar, syncToken=after["nextSyncToken"])) == (
        410,
        "fullSyncRequired",
    )
