"""Media's ViewsService against the session's media (issue 13): a booking's photo timeline (staff,
VIEWER included; uploads, reviews with their notes under details["notes"], deletions; newest first;
capped at 100 photos with `truncated`; a client's email never an actor), nothing for another org's
booking or for an invoice, and the photo metrics of a period (analysts), with bad input refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf import json_format

from gateway.tests.test_photo_routes import jpeg_bytes, upload
from gateway.tests.test_subscription_routes import create_booking
from libs.common.convert import to_ts
from tools.testkit import as_role, owner, rpc_error, signing_channel, sql


async def photographed_booking(gateway: Any, http: httpx.AsyncClient, make_org: Any) -> dict[str, Any]:
    """An org's booking with three photos: one approved, one sent back with a note, one deleted."""
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)
    ids = []
    for shade in (10, 120, 240):
        response = await upload(http, gateway.url, headers, booking["id"], jpeg_bytes(color=(shade, 40, 40)))
        assert response.status_code == 201, response.text
        ids.append(response.json()["photo_id"])
    approved, retake, deleted = ids
    photos = f"{gateway.url}/v1/admin/photos"
    assert (await http.post(f"{photos}/{approved}/approve", headers=headers)).status_code == 200
    sent_back = await http.post(f"{photos}/{retake}/needs-retake", headers=headers, json={"note": "too dark"})
    assert sent_back.status_code == 200, sent_back.text
    assert (await http.delete(f"{photos}/{deleted}", headers=headers)).status_code == 204
    return {
        "org": org,
        "booking_id": booking["id"],
        "approved": approved,
        "retake": retake,
        "deleted": deleted,
    }


async def timeline(target: str, org_id: str, role: str, **ids: str) -> views_pb2.GetTimelineResponse:
    async with signing_channel(target) as channel:
        return await views_pb2_grpc.ViewsServiceStub(channel).GetTimeline(
            views_pb2.GetTimelineRequest(**ids), metadata=as_role(org_id, role), timeout=10
        )


def as_dicts(response: views_pb2.GetTimelineResponse) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(entry) for entry in response.entries]


async def test_a_viewer_sees_what_happened_to_the_bookings_photos(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, stack: Any, media: Any
) -> None:
    made = await photographed_booking(gateway, http, make_org)
    org_id = made["org"].org_id
    # A client acting from the portal is known by their email (set behind media's back: superuser).
    await sql(
        stack.admin_url,
        "UPDATE media.order_photos SET uploaded_by = 'client.jane@example.com' WHERE id = %s",
        (uuid.UUID(made["retake"]),),
    )
    [(owner_id,)] = await sql(
        stack.admin_url,
        "SELECT uploaded_by FROM media.order_photos WHERE id = %s",
        (uuid.UUID(made["approved"]),),
    )

    response = await timeline(media.target, org_id, "VIEWER", booking_id=made["booking_id"])

    entries = as_dicts(response)
    assert not response.truncated
    kinds = sorted((e["id"], e["kind"]) for e in entries)
    assert kinds == sorted(
        [
            (made["approved"], "photo.uploaded"),
            (made["approved"], "photo.approved"),
            (made["retake"], "photo.uploaded"),
            (made["retake"], "photo.needs_retake"),
            (made["deleted"], "photo.uploaded"),
            (made["deleted"], "photo.deleted"),
        ]
    ), entries
    times = [entry.at.ToDatetime() for entry in response.entries]
    assert times == sorted(times, reverse=True), "newest first"
    assert {e["source"] for e in entries} == {"photo"}
    by_kind = {(e["id"], e["kind"]): e for e in entries}
    uploaded = by_kind[(made["approved"], "photo.uploaded")]
    assert uploaded["actor"] == owner_id and "email" not in uploaded["details"]
    retaken = by_kind[(made["retake"], "photo.needs_retake")]
    assert retaken["details"]["notes"] == "too dark" and retaken["actor"] == owner_id
    # The client's email is no actor: it sits in details under a PII key, for the gateway to mask.
    by_client = by_kind[(made["retake"], "photo.uploaded")]
    assert by_client.get("actor", "") == "" and by_client["details"]["email"] == "client.jane@example.com"
    for entry in entries:
        assert "@" not in entry["summary"] and "too dark" not in entry["summary"]
        assert "orders/" not in str(entry), "no storage key in a timeline"


async def test_every_staff_role_reads_it_and_no_one_else(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any
) -> None:
    made = await photographed_booking(gateway, http, make_org)
    org_id = made["org"].org_id
    for role in ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER"):
        assert len((await timeline(media.target, org_id, role, booking_id=made["booking_id"])).entries) == 6
    for role in ("WORKER", "CLIENT"):
        await rpc_error(
            timeline(media.target, org_id, role, booking_id=made["booking_id"]),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_another_orgs_booking_and_an_invoice_get_nothing(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any
) -> None:
    made = await photographed_booking(gateway, http, make_org)
    other = await make_org()
    # Booking owns bookings: media answers what it holds for the id in the caller's org, which is nothing.
    theirs = await timeline(media.target, other.org_id, "OWNER", booking_id=made["booking_id"])
    assert list(theirs.entries) == [] and not theirs.truncated
    unknown = await timeline(media.target, made["org"].org_id, "OWNER", booking_id=str(uuid.uuid4()))
    assert list(unknown.entries) == []
    invoice = await timeline(media.target, made["org"].org_id, "OWNER", invoice_id=str(uuid.uuid4()))
    assert list(invoice.entries) == []


async def test_bad_timeline_requests_name_the_field(make_org: Any, media: Any) -> None:
    org = await make_org()
    cases: list[tuple[dict[str, str], str]] = [
        ({"booking_id": "not-a-uuid"}, "booking_id"),
        ({"invoice_id": "12345"}, "invoice_id"),
        ({}, "booking_id"),
        ({"booking_id": str(uuid.uuid4()), "invoice_id": str(uuid.uuid4())}, "booking_id"),
    ]
    for ids, field in cases:
        error = await rpc_error(
            timeline(media.target, org.org_id, "OWNER", **ids), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [v.field for v in error.violations] == [field], (ids, error)


async def test_the_newest_hundred_photos_are_kept_and_the_cut_is_said(
    make_org: Any, stack: Any, media: Any
) -> None:
    org = await make_org()
    booking_id = uuid.uuid4()
    start = datetime.now(UTC) - timedelta(days=1)
    # 101 photo rows, a minute apart (rows only: the timeline never touches the objects).
    for n in range(101):
        photo_id = uuid.uuid4()
        await sql(
            stack.admin_url,
            "INSERT INTO media.order_photos (id, org_id, booking_id, storage_key, backend, mime, ext, bytes,"
            " sha256, width, height, uploaded_by, uploader_role, created_at) VALUES"
            " (%s, %s, %s, %s, 'local', 'image/jpeg', 'jpg', 10, %s, 4, 4, 'service:test', 'ADMIN', %s)",
            (
                photo_id,
                uuid.UUID(org.org_id),
                booking_id,
                f"orders/{org.org_id}/{booking_id}/{photo_id}.jpg",
                "0" * 64,
                start + timedelta(minutes=n),
            ),
        )
    response = await timeline(media.target, org.org_id, "VIEWER", booking_id=str(booking_id))
    assert response.truncated
    assert len(response.entries) == 100
    oldest = min(entry.at.ToDatetime(tzinfo=UTC) for entry in response.entries)
    assert oldest == start + timedelta(minutes=1), "the oldest photo is the one left out"


# --- metrics ----------------------------------------------------------------------------------------


async def get_metrics(
    target: str, org_id: str, role: str, start: datetime | None, end: datetime | None
) -> dict[str, float]:
    request = views_pb2.GetMetricsRequest()
    if start is not None:
        getattr(request, "from").CopyFrom(to_ts(start))
    if end is not None:
        request.to.CopyFrom(to_ts(end))
    async with signing_channel(target) as channel:
        response = await views_pb2_grpc.ViewsServiceStub(channel).GetMetrics(
            request, metadata=as_role(org_id, role), timeout=10
        )
    return {metric.name: metric.value for metric in response.metrics}


async def test_metrics_count_the_periods_uploads_and_reviews(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any
) -> None:
    made = await photographed_booking(gateway, http, make_org)
    org_id = made["org"].org_id
    now = datetime.now(UTC)
    expected = {"photos_uploaded": 3.0, "photos_approved": 1.0, "photos_needs_retake": 1.0}
    for role in ("OWNER", "ADMIN", "FINANCE"):
        assert await get_metrics(
            media.target, org_id, role, now - timedelta(days=1), now + timedelta(minutes=1)
        ) == (expected)
    # A period before any of it, and another org's figures for the same period: nothing.
    before = await get_metrics(
        media.target, org_id, "OWNER", now - timedelta(days=30), now - timedelta(days=1)
    )
    assert before == dict.fromkeys(expected, 0.0)
    other = await make_org()
    theirs = await get_metrics(
        media.target, other.org_id, "OWNER", now - timedelta(days=1), now + timedelta(minutes=1)
    )
    assert theirs == dict.fromkeys(expected, 0.0)


async def test_metrics_are_for_analysts_only(make_org: Any, media: Any) -> None:
    org = await make_org()
    now = datetime.now(UTC)
    for role in ("DISPATCHER", "VIEWER", "WORKER"):
        await rpc_error(
            get_metrics(media.target, org.org_id, role, now - timedelta(days=1), now),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_a_bad_period_is_refused_naming_the_field(make_org: Any, media: Any) -> None:
    org = await make_org()
    now = datetime.now(UTC)
    cases: list[tuple[datetime | None, datetime | None, str]] = [
        (None, now, "from"),
        (now - timedelta(days=1), None, "to"),
        (now, now, "to"),
        (now, now - timedelta(days=1), "to"),
        (now - timedelta(days=367), now, "to"),
    ]
    for start, end, field in cases:
        error = await rpc_error(
            get_metrics(media.target, org.org_id, "OWNER", start, end), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [v.field for v in error.violations] == [field], (start, end, error)
    # 366 days exactly is allowed.
    assert len(await get_metrics(media.target, org.org_id, "OWNER", now - timedelta(days=366), now)) == 3
