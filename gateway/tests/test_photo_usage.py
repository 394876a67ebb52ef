"""Stored bytes in the usage report, through the gateway in front of the real media, billing and NATS:
photos uploaded at the gateway (staff and worker) become `storage_bytes` counters in billing (media's
`cws.media.photo.stored`, billing's consumer) and taken off when deleted (`cws.media.photo.deleted`),
checked against media's own count (GetStorageUsage): no drift when they agree, storage drift when a
counter row is lost. With media not answering, the
report still answers, storage `checked: false` with the reason. GetStorageUsage is for suite
services only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cws.media.v1 import media_pb2, media_pb2_grpc

from conftest import billing_env
from gateway.tests.test_bola import worker_session_of
from gateway.tests.test_photo_routes import jpeg_bytes
from gateway.tests.test_photo_routes import upload as staff_upload
from gateway.tests.test_usage_report import REPORT, assert_no_drift, report, settled
from gateway.tests.test_worker_photos import assign, create_booking, make_worker, worker_upload
from tools import testkit
from tools.devstack import free_port
from tools.processes import ServiceProc, service_proc
from tools.testkit import as_role, as_service, rpc_error, signing_channel, sql


def storage_recorded(total: int) -> Any:
    return lambda r: r["recorded"]["storage_bytes"] == total


def all_recorded(total: int) -> Any:
    """`total` stored bytes recorded and every other counter caught up: the booking and the worker
    reach billing by events of their own, which may land after the photos' (CI saw a bookings drift
    right after the storage settled)."""
    return lambda r: storage_recorded(total)(r) and r["drift_detected"] is False


async def test_uploads_are_counted_as_stored_bytes_with_no_drift_and_a_lost_row_is_drift(
    gateway, http, make_org, stack
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await testkit.owner(http, url, org)
    empty = await report(http, url, headers)
    assert empty["drift"]["storage_bytes"]["checked"] is True and empty["storage_bytes"] == 0

    # One photo by the office, one by the job's worker from the worker portal.
    booking = await create_booking(http, url, headers)
    worker = await make_worker(http, url, headers, "Wren")
    await assign(http, url, headers, booking["id"], worker)
    by_office = await staff_upload(http, url, headers, booking["id"], jpeg_bytes(320, 240))
    assert by_office.status_code == 201, by_office.text
    session = await worker_session_of(http, url, org, worker)
    by_worker = await worker_upload(http, url, session, booking["id"], jpeg_bytes(64, 48, (0, 0, 200)))
    assert by_worker.status_code == 201, by_worker.text
    first, second = by_office.json(), by_worker.json()
    total = first["bytes"] + second["bytes"]

    seen = await settled(http, url, headers, all_recorded(total), "both photos recorded")
    assert_no_drift(seen)
    assert seen["storage_bytes"] == total
    assert seen["drift"]["storage_bytes"] == {
        "recorded": total,
        "actual": total,
        "difference": 0,
        "drift_detected": False,
        "checked": True,
    }
    rows = await sql(
        stack.admin_url,
        "SELECT subject_id, delta FROM billing.usage_events WHERE org_id = %s AND metric = 'storage_bytes'",
        (uuid.UUID(org.org_id),),
    )
    assert sorted(rows) == sorted(
        [(first["photo_id"], first["bytes"]), (second["photo_id"], second["bytes"])]
    )

    # Deleting a photo takes its bytes off on both sides (cws.media.photo.deleted; media's live rows).
    deleted = await http.delete(f"{url}/v1/admin/photos/{second['photo_id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    seen = await settled(http, url, headers, all_recorded(first["bytes"]), "the deletion recorded")
    assert_no_drift(seen)
    assert seen["storage_bytes"] == first["bytes"]

    # A lost event: the office photo's counter row never written (deleted behind billing's back).
    await sql(
        stack.admin_url,
        "DELETE FROM billing.usage_events WHERE org_id = %s AND subject_id = %s",
        (uuid.UUID(org.org_id), first["photo_id"]),
    )
    seen = await report(http, url, headers)
    assert seen["drift_detected"] is True
    assert seen["drift"]["storage_bytes"] == {
        "recorded": 0,
        "actual": first["bytes"],
        "difference": -first["bytes"],
        "drift_detected": True,
        "checked": True,
    }
    # The truth is what counts against the plan; the other metrics are unaffected.
    assert seen["storage_bytes"] == first["bytes"] and seen["recorded"]["storage_bytes"] == 0
    assert seen["drift"]["workers"]["drift_detected"] is False
    assert seen["drift"]["bookings"]["drift_detected"] is False


async def test_another_orgs_photos_are_not_in_the_report(gateway, http, make_org) -> None:
    url = gateway.url
    mine, theirs = await make_org(), await make_org()
    me, them = await testkit.owner(http, url, mine), await testkit.owner(http, url, theirs)
    their_booking = await create_booking(http, url, them)
    stored = await staff_upload(http, url, them, their_booking["id"], jpeg_bytes())
    assert stored.status_code == 201, stored.text
    await settled(http, url, them, storage_recorded(stored.json()["bytes"]), "their photo recorded")
    seen = await report(http, url, me)
    assert (seen["storage_bytes"], seen["recorded"]["storage_bytes"]) == (0, 0)
    assert_no_drift(seen)


async def test_get_storage_usage_is_for_suite_services_only(gateway, http, make_org, media) -> None:
    org = await make_org()
    headers = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)
    stored = await staff_upload(http, gateway.url, headers, booking["id"], jpeg_bytes())
    assert stored.status_code == 201, stored.text
    async with signing_channel(media.target) as channel:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        found = await stub.GetStorageUsage(
            media_pb2.GetStorageUsageRequest(), metadata=as_service(org.org_id, "billing")
        )
        assert (found.stored_bytes, found.photos) == (stored.json()["bytes"], 1)
        other = await stub.GetStorageUsage(
            media_pb2.GetStorageUsageRequest(), metadata=as_service(str(uuid.uuid4()), "billing")
        )
        assert (other.stored_bytes, other.photos) == (0, 0)
        refused = await rpc_error(
            stub.GetStorageUsage(media_pb2.GetStorageUsageRequest(), metadata=as_role(org.org_id, "OWNER")),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert refused.reason == "service_only"


@pytest.fixture(scope="module")
def billing_without_media(stack, iam, booking, notify, local_stripe) -> Iterator[ServiceProc]:
    """A second billing whose media does not answer (nothing listens at its MEDIA_GRPC_TARGET)."""
    env = {
        **billing_env(stack, iam, booking, notify, local_stripe),
        "MEDIA_GRPC_TARGET": f"127.0.0.1:{free_port()}",
    }
    proc = service_proc("billing", env, stack.work_dir / "logs", label="billing-no-media")
    proc.start().wait_ready()
    yield proc
    proc.stop()


async def test_media_not_answering_leaves_storage_unchecked_not_the_report_failed(
    gateways, http, make_org, billing_without_media
) -> None:
    gateway = gateways.get(BILLING_GRPC_TARGET=billing_without_media.target)
    org = await make_org()
    headers = await testkit.owner(http, gateway.url, org)
    response = await http.get(f"{gateway.url}{REPORT}", headers=headers)
    assert response.status_code == 200, response.text
    seen = response.json()
    storage = seen["drift"]["storage_bytes"]
    assert storage["checked"] is False and storage["actual"] is None and storage["difference"] is None
    assert storage["drift_detected"] is False and "media did not answer" in storage["reason"], storage
    assert seen["drift"]["workers"]["checked"] is True and seen["drift"]["bookings"]["checked"] is True
    assert seen["drift_detected"] is False
