"""Worker portal uploads through the gateway, against the real suite: a worker signed in to the worker
portal uploads a photo of their own assigned job (stored as a WORKER upload under its canonical key)
and lists only their own uploads; another worker's job, an unassigned job and another org's job are
404 (and nothing is stored); staff credentials are no portal credentials (401); bad bodies are
Problem+JSON; a paused org's worker gets 409. Media's own assignment check (booking's answer, the
worker id from the signed context) is shown directly over gRPC too."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
from cws.common.v1.context_pb2 import AuthMethod
from cws.media.v1 import media_pb2, media_pb2_grpc

from gateway.tests.test_bola import worker_session_of
from gateway.tests.test_photo_routes import jpeg_bytes, photo_form
from gateway.tests.test_photo_routes import upload as staff_upload
from gateway.tests.test_subscription_routes import BOOKING, act, slot
from libs.common import context as request_context
from tools.testkit import (
    as_role,
    assert_clean,
    assert_problem,
    eventually,
    owner,
    rpc_error,
    signed,
    signing_channel,
)


def photos_path(booking_id: str) -> str:
    return f"/v1/worker/portal/bookings/{booking_id}/photos"


async def worker_upload(
    http: httpx.AsyncClient, url: str, session: dict[str, str], booking_id: str, data: bytes, **form: str
) -> httpx.Response:
    body, content_type = photo_form(data, **form)
    response = await http.post(
        f"{url}{photos_path(booking_id)}", content=body, headers={**session, "Content-Type": content_type}
    )
    assert_clean(response)
    return response


async def create_booking(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], hours_from_now: float = 48
) -> dict[str, Any]:
    """A pending booking; jobs of one test get their own slots, so one worker can be on several."""
    created = await http.post(
        f"{url}/v1/admin/bookings", headers=headers, json={**BOOKING, "starts_at": slot(hours_from_now)}
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def make_worker(http: httpx.AsyncClient, url: str, headers: dict[str, str], name: str) -> str:
    created = await http.post(f"{url}/v1/admin/workers", headers=headers, json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def assign(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str, *workers: str
) -> None:
    assigned = await http.post(
        f"{url}/v1/admin/bookings/{booking_id}/assign", headers=headers, json={"worker_ids": list(workers)}
    )
    assert assigned.status_code == 200, assigned.text


async def crew(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, Any]:
    """An org with two workers signed in to their portal, and one job for each."""
    headers = await owner(http, url, org)
    wren, robin = (
        await make_worker(http, url, headers, "Wren"),
        await make_worker(http, url, headers, "Robin"),
    )
    job_of_wren = await create_booking(http, url, headers, 48)
    job_of_robin = await create_booking(http, url, headers, 72)
    await assign(http, url, headers, job_of_wren["id"], wren)
    await assign(http, url, headers, job_of_robin["id"], robin)
    return {
        "owner": headers,
        "wren": wren,
        "robin": robin,
        "job_of_wren": job_of_wren["id"],
        "job_of_robin": job_of_robin["id"],
        "wren_session": await worker_session_of(http, url, org, wren),
        "robin_session": await worker_session_of(http, url, org, robin),
    }


async def test_a_worker_uploads_to_their_own_job_and_lists_their_own_uploads(
    gateway, http, make_org, stack
) -> None:
    url = gateway.url
    org = await make_org()
    c = await crew(http, url, org)
    job = c["job_of_wren"]
    # Robin helps on Wren's job too, and the office adds a photo: neither is Wren's to list.
    await assign(http, url, c["owner"], job, c["wren"], c["robin"])

    response = await worker_upload(http, url, c["wren_session"], job, jpeg_bytes(), filename="../x.jpg")
    assert response.status_code == 201, response.text
    photo = response.json()
    assert (photo["booking_id"], photo["uploader_role"], photo["uploaded_by"], photo["status"]) == (
        job,
        "WORKER",
        c["wren"],
        "pending",
    )
    assert (photo["mime"], photo["width"], photo["height"]) == ("image/jpeg", 64, 48)
    stored = Path(stack.work_dir) / "uploads" / "orders" / org.org_id / job / f"{photo['photo_id']}.jpg"
    assert stored.is_file() and stored.stat().st_size == photo["bytes"]
    by_robin = await worker_upload(http, url, c["robin_session"], job, jpeg_bytes(color=(0, 90, 0)))
    assert by_robin.status_code == 201, by_robin.text
    by_office = await staff_upload(http, url, c["owner"], job, jpeg_bytes(color=(0, 0, 90)))
    assert by_office.status_code == 201, by_office.text

    listed = await http.get(f"{url}{photos_path(job)}", headers=c["wren_session"])
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [photo]
    robins = await http.get(f"{url}{photos_path(job)}", headers=c["robin_session"])
    assert [p["photo_id"] for p in robins.json()["items"]] == [by_robin.json()["photo_id"]]
    # The office sees all three, the workers' uploads among them.
    office = await http.get(f"{url}/v1/admin/bookings/{job}/photos", headers=c["owner"])
    assert {p["uploader_role"] for p in office.json()["items"]} == {"WORKER", "OWNER"}
    assert len(office.json()["items"]) == 3


async def test_another_workers_job_an_unassigned_job_and_another_orgs_job_are_404(
    gateway, http, make_org
) -> None:
    url = gateway.url
    org, other = await make_org("Worker photos A"), await make_org("Worker photos B")
    c, theirs = await crew(http, url, org), await crew(http, url, other)
    unassigned = (await create_booking(http, url, c["owner"], 96))["id"]
    for job in (c["job_of_robin"], unassigned, theirs["job_of_wren"], str(uuid.uuid4())):
        assert_problem(await worker_upload(http, url, c["wren_session"], job, jpeg_bytes()), 404)
        assert_problem(await http.get(f"{url}{photos_path(job)}", headers=c["wren_session"]), 404)
    # Nothing was stored for the refused uploads.
    for job, headers in ((c["job_of_robin"], c["owner"]), (unassigned, c["owner"])):
        listed = await http.get(f"{url}/v1/admin/bookings/{job}/photos", headers=headers)
        assert listed.json()["items"] == [], listed.text
    # Taken off the job: their own job no longer, their uploads no longer listed for them.
    mine = await worker_upload(http, url, c["wren_session"], c["job_of_wren"], jpeg_bytes())
    assert mine.status_code == 201, mine.text
    await assign(http, url, c["owner"], c["job_of_wren"], c["robin"])
    assert_problem(await worker_upload(http, url, c["wren_session"], c["job_of_wren"], jpeg_bytes()), 404)
    assert_problem(await http.get(f"{url}{photos_path(c['job_of_wren'])}", headers=c["wren_session"]), 404)


async def test_staff_credentials_and_no_credentials_are_401(gateway, http, make_org) -> None:
    url = gateway.url
    c = await crew(http, url, await make_org())
    for headers in (c["owner"], {}):
        assert_problem(await worker_upload(http, url, headers, c["job_of_wren"], jpeg_bytes()), 401)
        assert_problem(await http.get(f"{url}{photos_path(c['job_of_wren'])}", headers=headers), 401)


async def test_bad_uploads_are_problems(gateway, http, make_org) -> None:
    url = gateway.url
    c = await crew(http, url, await make_org())
    session, job = c["wren_session"], c["job_of_wren"]
    html = b"<html><script>alert(1)</script></html>" * 10
    assert_problem(await worker_upload(http, url, session, job, html, filename="x.jpg"), 415)
    raw = await http.post(
        f"{url}{photos_path(job)}", content=jpeg_bytes(), headers={**session, "Content-Type": "image/jpeg"}
    )
    assert_problem(raw, 415, "unsupported_media_type")
    for response in (
        await worker_upload(http, url, session, "not-a-uuid", jpeg_bytes()),
        await http.get(f"{url}{photos_path('not-a-uuid')}", headers=session),
    ):
        assert_clean(response)
        assert response.status_code in (404, 422), response.text
    listed = await http.get(f"{url}{photos_path(job)}", headers=session)
    assert listed.json()["items"] == [], "nothing refused was stored"


async def test_a_paused_orgs_worker_cannot_upload(gateway, http, make_org, billing, media) -> None:
    url = gateway.url
    c = await crew(http, url, await make_org())
    paused = await act(http, url, c["owner"], "pause", "seasonal_break")
    assert paused.status_code == 200, paused.text

    async def refused() -> httpx.Response | None:
        response = await worker_upload(http, url, c["wren_session"], c["job_of_wren"], jpeg_bytes())
        assert response.status_code in (201, 409), response.text
        return response if response.status_code == 409 else None

    assert_problem(
        await eventually(refused, timeout=30, message="media hearing the pause"), 409, "subscription_paused"
    )
    # Their list is still readable while paused.
    listed = await http.get(f"{url}{photos_path(c['job_of_wren'])}", headers=c["wren_session"])
    assert listed.status_code == 200, listed.text


def worker_context(org_id: str, worker_id: str) -> Any:
    return signed(
        request_context.RequestContext(
            org_id=org_id,
            principal_id=worker_id,
            role="WORKER",
            auth_method=AuthMethod.Value("AUTH_METHOD_WORKER_PORTAL"),
            request_id=f"test-{uuid.uuid4().hex[:12]}",
        )
    )


async def test_media_checks_the_assignment_itself(gateway, http, make_org, media) -> None:
    """Straight to media with a worker's signed context (no gateway check before it): media asks
    booking who is assigned, so another worker's job is NOT_FOUND there too, and staff contexts are
    refused on the worker rpcs."""
    org = await make_org()
    c = await crew(http, gateway.url, org)
    async with signing_channel(media.target) as channel:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        own = await stub.ListWorkerPhotos(
            media_pb2.ListWorkerPhotosRequest(booking_id=c["job_of_wren"]),
            metadata=worker_context(org.org_id, c["wren"]),
        )
        assert list(own.photos) == []
        await rpc_error(
            stub.ListWorkerPhotos(
                media_pb2.ListWorkerPhotosRequest(booking_id=c["job_of_robin"]),
                metadata=worker_context(org.org_id, c["wren"]),
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        # A worker id claimed in another org does not make the job theirs.
        await rpc_error(
            stub.ListWorkerPhotos(
                media_pb2.ListWorkerPhotosRequest(booking_id=c["job_of_wren"]),
                metadata=worker_context(str(uuid.uuid4()), c["wren"]),
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        staff = await rpc_error(
            stub.ListWorkerPhotos(
                media_pb2.ListWorkerPhotosRequest(booking_id=c["job_of_wren"]),
                metadata=as_role(org.org_id, "OWNER"),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert staff.reason == "worker_only", staff
