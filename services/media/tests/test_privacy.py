"""Media's PrivacyService on moto's S3 server (a media process with ORDER_STORAGE_BACKEND=r2 behind its
own gateway), issue 13 / seed 002's data export/delete playbook.

Export (OWNER or ADMIN): the photos and consents of the person's bookings, metadata only (no storage
key, no link, no token). Erase (suite services only): every live photo of those bookings deleted as an
admin deletes one (soft delete + tombstone), review notes cleared, a client's email as uploader or
reviewer ERASED, consents gone, published events naming the person forgotten; the storage janitor then
removes the objects from the bucket (a legacy key's object too). A second erase changes nothing.
Another org's context gets nothing and changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import grpc
import httpx
import pytest
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc
from cws.media.v1 import media_pb2, media_pb2_grpc
from google.protobuf import json_format
from moto.server import ThreadedMotoServer

from conftest import media_env
from gateway.tests.test_photo_routes import jpeg_bytes, upload
from gateway.tests.test_subscription_routes import create_booking
from libs.common.privacy import ERASED
from tools.devstack import free_port, port_open, wait_for
from tools.processes import service_proc
from tools.testkit import as_role, as_service, eventually, owner, rpc_error, signing_channel, sql

BUCKET = "cws-privacy"
S3_KEYS = {"aws_access_key_id": "privacy-access", "aws_secret_access_key": "privacy-secret"}
CLIENT_EMAIL = "jane.doe@example.com"


@dataclass
class S3Media:
    target: str  # the r2 media's gRPC target
    url: str  # a gateway in front of it
    s3: Any

    def keys(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="module")
def s3_media(stack: Any, booking: Any, notify: Any, gateways: Any) -> Iterator[S3Media]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for(lambda: port_open("127.0.0.1", port), "moto S3 server")
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS)
    s3.create_bucket(Bucket=BUCKET)
    env = {
        **media_env(stack, booking, notify),
        "ORDER_STORAGE_BACKEND": "r2",
        "R2_BUCKET": BUCKET,
        "R2_ACCESS_KEY": S3_KEYS["aws_access_key_id"],
        "R2_SECRET_KEY": S3_KEYS["aws_secret_access_key"],
        "R2_ENDPOINT": endpoint,
        "R2_REGION": "us-east-1",
    }
    proc = service_proc("media", env, stack.work_dir / "logs", label="media-privacy-r2").start().wait_ready()
    try:
        gateway = gateways.get(MEDIA_GRPC_TARGET=proc.target)
        yield S3Media(proc.target, gateway.url, s3)
    finally:
        proc.stop()
        server.stop()


@dataclass
class Holdings:
    org_id: str
    person: privacy_pb2.Person
    photos: list[str]  # the person's
    bystander: str  # a photo of another client's booking, same org
    legacy_key: str


async def photos_of_a_person(media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any) -> Holdings:
    """Two bookings of one client with three photos in the bucket (one sent back with a note naming
    the client, one uploaded by the client from the portal, one also known by a legacy key whose
    object is in the bucket), a consent the client gave, a published event naming them; and another
    client's booking with a photo that must stay."""
    org = await make_org()
    headers = await owner(http, media.url, org)
    first, second, other = [await create_booking(http, media.url, headers) for _ in range(3)]
    photos = []
    for booking_id in (first["id"], first["id"], second["id"]):
        response = await upload(http, media.url, headers, booking_id, jpeg_bytes())
        assert response.status_code == 201, response.text
        photos.append(response.json()["photo_id"])
    kept = await upload(http, media.url, headers, other["id"], jpeg_bytes())
    assert kept.status_code == 201, kept.text
    retake = await http.post(
        f"{media.url}/v1/admin/photos/{photos[0]}/needs-retake",
        headers=headers,
        json={"note": "Jane Doe's kitchen is too dark"},
    )
    assert retake.status_code == 200, retake.text

    # What only other paths write (the client portal, imported history, the relay), behind media's
    # back (superuser).
    org_uuid = uuid.UUID(org.org_id)
    await sql(
        stack.admin_url,
        "UPDATE media.order_photos SET uploaded_by = %s WHERE id = %s",
        (CLIENT_EMAIL, uuid.UUID(photos[1])),
    )
    legacy_key = f"orders/{org.org_id}/{second['id']}/{uuid.uuid4()}"
    media.s3.put_object(Bucket=BUCKET, Key=legacy_key, Body=jpeg_bytes(), ContentType="image/jpeg")
    await sql(
        stack.admin_url,
        "UPDATE media.order_photos SET legacy_key = %s WHERE id = %s",
        (legacy_key, uuid.UUID(photos[2])),
    )
    await sql(
        stack.admin_url,
        "INSERT INTO media.photo_consents (org_id, booking_id, granted, granted_by, source)"
        " VALUES (%s, %s, true, %s, 'client_portal'), (%s, %s, true, 'staff-user', 'staff')",
        (org_uuid, uuid.UUID(first["id"]), CLIENT_EMAIL, org_uuid, uuid.UUID(other["id"])),
    )
    await sql(
        stack.admin_url,
        "INSERT INTO media.event_outbox (id, subject, payload, org_id, published_at)"
        " VALUES (%s, 'cws.media.audit.recorded', %s, %s, now())",
        (uuid.uuid4(), b"\x0a\x14" + CLIENT_EMAIL.encode(), org_uuid),
    )
    person = privacy_pb2.Person(
        emails=[CLIENT_EMAIL],
        booking_ids=[first["id"], second["id"]],
        pii_values=["Jane Doe"],
    )
    return Holdings(org.org_id, person, photos, kept.json()["photo_id"], legacy_key)


async def export(target: str, metadata: Any, person: privacy_pb2.Person) -> dict[str, Any]:
    async with signing_channel(target) as channel:
        response = await privacy_pb2_grpc.PrivacyServiceStub(channel).ExportPerson(
            privacy_pb2.ExportPersonRequest(person=person), metadata=metadata, timeout=10
        )
    return json_format.MessageToDict(response.sections)


async def erase(target: str, metadata: Any, person: privacy_pb2.Person) -> privacy_pb2.ErasePersonResponse:
    async with signing_channel(target) as channel:
        return await privacy_pb2_grpc.PrivacyServiceStub(channel).ErasePerson(
            privacy_pb2.ErasePersonRequest(request_id=str(uuid.uuid4()), person=person),
            metadata=metadata,
            timeout=30,
        )


async def run_janitor(target: str) -> media_pb2.RunStorageJanitorResponse:
    async with signing_channel(target) as channel:
        return await media_pb2_grpc.MediaServiceStub(channel).RunStorageJanitor(
            media_pb2.RunStorageJanitorRequest(), metadata=as_service("", "jobs"), timeout=30
        )


async def all_published(stack: Any, org_id: str) -> bool:
    """Whether the relay has published every event of the org (True when none waits)."""
    rows = await sql(
        stack.admin_url,
        "SELECT count(*) FROM media.event_outbox WHERE org_id = %s AND published_at IS NULL",
        (uuid.UUID(org_id),),
    )
    return rows == [(0,)]


async def photo_rows(stack: Any, org_id: str) -> dict[str, tuple[Any, ...]]:
    rows = await sql(
        stack.admin_url,
        "SELECT id, deleted_at, review_note, uploaded_by, reviewed_by, legacy_key, storage_key"
        " FROM media.order_photos WHERE org_id = %s",
        (uuid.UUID(org_id),),
    )
    return {str(row[0]): row[1:] for row in rows}


async def test_an_export_lists_the_photos_and_consents_as_metadata_only(
    s3_media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any
) -> None:
    held = await photos_of_a_person(s3_media, http, make_org, stack)
    for role in ("OWNER", "ADMIN"):
        sections = await export(s3_media.target, as_role(held.org_id, role), held.person)
        assert sorted(p["id"] for p in sections["photos"]) == sorted(held.photos)
        retaken = next(p for p in sections["photos"] if p["id"] == held.photos[0])
        assert set(retaken) == {
            "id",
            "booking_id",
            "status",
            "mime",
            "bytes",
            "width",
            "height",
            "created_at",
            "reviewed_at",
            "deleted_at",
        }, retaken
        assert (
            retaken["status"] == "needs_retake" and retaken["mime"] == "image/jpeg" and retaken["bytes"] > 0
        )
        [consent] = sections["photo_consents"]
        assert consent["booking_id"] == held.person.booking_ids[0] and consent["granted"] is True
        assert consent["source"] == "client_portal" and consent["withdrawn_at"] is None
        text = json.dumps(sections)
        # Metadata only: no key, no link, no token, and not the note's free text.
        assert "orders/" not in text and "http" not in text and "token" not in text and "Jane" not in text


async def test_only_managers_export_and_another_org_gets_nothing(
    s3_media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any
) -> None:
    held = await photos_of_a_person(s3_media, http, make_org, stack)
    for role in ("DISPATCHER", "FINANCE", "VIEWER", "WORKER"):
        async with signing_channel(s3_media.target) as channel:
            await rpc_error(
                privacy_pb2_grpc.PrivacyServiceStub(channel).ExportPerson(
                    privacy_pb2.ExportPersonRequest(person=held.person),
                    metadata=as_role(held.org_id, role),
                    timeout=10,
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
    other = await make_org()
    theirs = await export(s3_media.target, as_role(other.org_id, "OWNER"), held.person)
    assert theirs == {"photos": [], "photo_consents": []}
    # Ids that are not UUIDs, or no person at all: an empty bundle, not an error.
    junk = privacy_pb2.Person(booking_ids=["not-a-uuid", "1; DROP TABLE x"], emails=["x@example.com"])
    assert await export(s3_media.target, as_role(held.org_id, "OWNER"), junk) == {
        "photos": [],
        "photo_consents": [],
    }
    assert await export(s3_media.target, as_role(held.org_id, "OWNER"), privacy_pb2.Person()) == {
        "photos": [],
        "photo_consents": [],
    }


async def test_erasing_tombstones_the_photos_and_the_janitor_empties_the_bucket(
    s3_media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any
) -> None:
    held = await photos_of_a_person(s3_media, http, make_org, stack)
    before = await photo_rows(stack, held.org_id)
    person_keys = {before[photo][5] for photo in held.photos} | {held.legacy_key}
    bystander_key = before[held.bystander][5]
    assert person_keys | {bystander_key} <= s3_media.keys()

    # Another org's erase step with this person's ids touches nothing here.
    other = await make_org()
    elsewhere = await erase(s3_media.target, as_service(other.org_id), held.person)
    assert elsewhere.changed == 0 and elsewhere.pending_reason == ""
    assert await photo_rows(stack, held.org_id) == before

    # The retake's audit event carries the note ("Jane Doe's ..."): once the relay has published it,
    # the erase may forget it (an unpublished one would make the step pending).
    await eventually(lambda: all_published(stack, held.org_id), message="the relay publishing")

    first = await erase(s3_media.target, as_service(held.org_id), held.person)

    assert first.pending_reason == "", first
    # 3 photos deleted, 1 note cleared, 1 uploader erased, 1 legacy key, 1 consent, and 2 published
    # events naming the client (the retake's audit record and the one planted above).
    assert first.changed == 9, first
    after = await photo_rows(stack, held.org_id)
    for photo in held.photos:
        deleted_at, note, uploaded_by, reviewed_by, legacy_key, _ = after[photo]
        assert deleted_at is not None and note is None and legacy_key is None
        assert "@" not in uploaded_by and "@" not in (reviewed_by or "")
    assert after[held.photos[1]][2] == ERASED
    assert after[held.bystander] == before[held.bystander], "another client's photo stays"
    tombstones = await sql(
        stack.admin_url,
        "SELECT storage_key, backend FROM media.photo_tombstones WHERE org_id = %s",
        (uuid.UUID(held.org_id),),
    )
    assert person_keys <= {key for key, _ in tombstones} and {b for _, b in tombstones} == {"r2"}
    assert bystander_key not in {key for key, _ in tombstones}
    consents = await sql(
        stack.admin_url,
        "SELECT granted_by FROM media.photo_consents WHERE org_id = %s",
        (uuid.UUID(held.org_id),),
    )
    assert consents == [("staff-user",)], "the client's consent goes, the other client's stays"
    mentions = await sql(
        stack.admin_url,
        "SELECT count(*) FROM media.event_outbox WHERE org_id = %s AND position(%s IN payload) > 0",
        (uuid.UUID(held.org_id), CLIENT_EMAIL.encode()),
    )
    assert mentions == [(0,)]
    # The objects stay until the janitor runs: a backend that is down at erase time loses nothing.
    assert person_keys <= s3_media.keys()

    swept = await run_janitor(s3_media.target)

    assert swept.failed == 0 and swept.deleted >= len(person_keys), swept
    stored = s3_media.keys()
    assert not person_keys & stored, person_keys & stored
    assert bystander_key in stored
    left = await sql(
        stack.admin_url,
        "SELECT count(*) FROM media.photo_tombstones WHERE org_id = %s",
        (uuid.UUID(held.org_id),),
    )
    assert left == [(0,)]
    # The export now shows the photos deleted, and nothing else.
    sections = await export(s3_media.target, as_role(held.org_id, "OWNER"), held.person)
    assert all(p["deleted_at"] for p in sections["photos"]) and sections["photo_consents"] == []

    again = await erase(s3_media.target, as_service(held.org_id), held.person)
    assert (again.changed, again.pending_reason) == (0, "")
    assert await photo_rows(stack, held.org_id) == after


async def test_only_suite_services_erase(
    s3_media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any
) -> None:
    held = await photos_of_a_person(s3_media, http, make_org, stack)
    for role in ("OWNER", "ADMIN"):
        await rpc_error(
            erase(s3_media.target, as_role(held.org_id, role), held.person), grpc.StatusCode.PERMISSION_DENIED
        )
    rows = await photo_rows(stack, held.org_id)
    assert all(row[0] is None for row in rows.values()), "nothing deleted"
    # Ids that are not UUIDs are no one's: nothing to do, and no error.
    junk = privacy_pb2.Person(booking_ids=["not-a-uuid"])
    assert (await erase(s3_media.target, as_service(held.org_id), junk)).changed == 0


async def test_an_event_naming_the_person_not_yet_published_keeps_the_step_pending(
    s3_media: S3Media, http: httpx.AsyncClient, make_org: Any, stack: Any
) -> None:
    held = await photos_of_a_person(s3_media, http, make_org, stack)
    await eventually(lambda: all_published(stack, held.org_id), message="the relay publishing")
    # An event naming the client that the relay cannot publish (no stream takes its subject), so it
    # stays unpublished for as long as the test needs.
    event_id = uuid.uuid4()
    await sql(
        stack.admin_url,
        "INSERT INTO media.event_outbox (id, subject, payload, org_id)"
        " VALUES (%s, 'cws.test.privacy.unpublished', %s, %s)",
        (event_id, b"\x0a\x14" + CLIENT_EMAIL.encode(), uuid.UUID(held.org_id)),
    )
    try:
        first = await erase(s3_media.target, as_service(held.org_id), held.person)
        # The rest is done; the event is left for its consumers, and the driver runs the step again.
        assert first.changed == 9 and "not published" in first.pending_reason, first
        rows = await photo_rows(stack, held.org_id)
        assert all(rows[photo][0] is not None for photo in held.photos)
        assert await sql(stack.admin_url, "SELECT 1 FROM media.event_outbox WHERE id = %s", (event_id,))

        # Published meanwhile: the next run forgets it and is done.
        await sql(
            stack.admin_url, "UPDATE media.event_outbox SET published_at = now() WHERE id = %s", (event_id,)
        )
        second = await erase(s3_media.target, as_service(held.org_id), held.person)
        assert (second.changed, second.pending_reason) == (1, ""), second
        assert not await sql(stack.admin_url, "SELECT 1 FROM media.event_outbox WHERE id = %s", (event_id,))
    finally:
        await sql(stack.admin_url, "DELETE FROM media.event_outbox WHERE id = %s", (event_id,))
