"""Bad uploads through the gateway on all three storage backends: the session's media (local, under
the session's work dir), a media on moto's S3 server (ORDER_STORAGE_BACKEND=r2) and a media on the
Cloudflare Images stand-in (services/media/tests/cf_images_server.py), each behind its own gateway
with ORDER_PHOTO_MAX_BYTES=64 KiB. Oversize (declared and chunked) 413, an HTML file named .jpg 415,
a truncated JPEG 422, another org's booking and photo 404, and after every refusal the backend holds
no new object (the upload root's files, the bucket's keys, the stand-in's images). A PNG named .jpg is
stored as PNG and its signed link serves exactly the bytes the list describes; path-like filenames
never reach the key, which stays `orders/{org}/{booking}/{photo}.{ext}`.

Lives under services/media/tests (not gateway/tests) because it starts media processes, and the
import rules keep gateway/tests away from services."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from conftest import media_env
from gateway.tests.test_photo_links import BROWSER, booking_of, public_path
from gateway.tests.test_photo_routes import jpeg_bytes, photo_form, upload
from services.media.tests.cf_images_server import CloudflareImagesServer
from tools.devstack import free_port, port_open, wait_for
from tools.processes import service_proc
from tools.testkit import assert_problem, eventually, owner, sql

# The same limit test_photo_routes.py gives its small gateway, so the local case shares that process.
LIMIT = 64 * 1024
BUCKET = "cws-bad-input"
ABSOLUTE_NAME = "/tmp/cws-bad-input-absolute.jpg"
S3_KEYS = {"aws_access_key_id": "bad-input-access", "aws_secret_access_key": "bad-input-secret"}


@dataclass
class Backend:
    """One storage backend as the tests see it: the gateway in front of its media, and what it holds."""

    name: str  # as media.order_photos.backend records it
    url: str
    # Every object the backend holds, by its own name (a path under the root, an S3 key, an image id).
    objects: Callable[[], set[str]]
    # The storage key each of those objects was written under.
    key_of: Callable[[str], str]


def _local(root: Path) -> tuple[Callable[[], set[str]], Callable[[str], str]]:
    def objects() -> set[str]:
        # The spool (.incoming/) counts too: a refused upload must not leave its bytes there either.
        return (
            {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
            if root.exists()
            else set()
        )

    return objects, lambda name: name


def _s3(endpoint: str) -> tuple[Callable[[], set[str]], Callable[[str], str]]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS)

    def objects() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    return objects, lambda name: name


def _cf(server: CloudflareImagesServer) -> tuple[Callable[[], set[str]], Callable[[str], str]]:
    def objects() -> set[str]:
        with server.lock:
            return set(server.images)

    def key_of(image_id: str) -> str:
        # Uploads carry no custom id; the key travels in the image's metadata (storage/cf_images.py).
        image = server.images[image_id]
        key = str(json.loads(image.metadata)["key"])
        assert image.filename == key.rsplit("/", 1)[-1], image.filename
        return key

    return objects, key_of


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for(lambda: port_open("127.0.0.1", port), "moto S3 server")
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module", params=["local", "r2", "cloudflare_images"])
def backend(
    request: pytest.FixtureRequest, stack: Any, booking: Any, notify: Any, gateways: Any
) -> Iterator[Backend]:
    """Started once per backend (pytest runs a module-scoped parameter's tests together). The local
    case is the session's media; the others get their own media process, stopped at the end."""
    name = request.param
    if name == "local":
        objects, key_of = _local(Path(stack.work_dir) / "uploads")
        yield Backend(name, gateways.get(ORDER_PHOTO_MAX_BYTES=str(LIMIT)).url, objects, key_of)
        return
    env = {**media_env(stack, booking, notify), "ORDER_PHOTO_MAX_BYTES": str(LIMIT)}
    with_server: CloudflareImagesServer | None = None
    if name == "r2":
        endpoint = request.getfixturevalue("moto_endpoint")
        env |= {
            "ORDER_STORAGE_BACKEND": "r2",
            "R2_BUCKET": BUCKET,
            "R2_ACCESS_KEY": S3_KEYS["aws_access_key_id"],
            "R2_SECRET_KEY": S3_KEYS["aws_secret_access_key"],
            "R2_ENDPOINT": endpoint,
            "R2_REGION": "us-east-1",
        }
        objects, key_of = _s3(endpoint)
    else:
        with_server = CloudflareImagesServer().start()
        env |= {
            "ORDER_STORAGE_BACKEND": "cloudflare_images",
            "CF_IMAGES_ACCOUNT_ID": with_server.account_id,
            "CF_IMAGES_ACCOUNT_HASH": with_server.account_hash,
            "CF_IMAGES_API_TOKEN": with_server.api_token,
            "CF_IMAGES_SIGNING_KEY": with_server.signing_key,
            "CF_IMAGES_API_BASE": with_server.api_base,
            "CF_IMAGES_DELIVERY_BASE": with_server.url,
        }
        objects, key_of = _cf(with_server)
    proc = service_proc("media", env, stack.work_dir / "logs", label=f"media-bad-{name}").start().wait_ready()
    try:
        gateway = gateways.get(MEDIA_GRPC_TARGET=proc.target, ORDER_PHOTO_MAX_BYTES=str(LIMIT))
        yield Backend(name, gateway.url, objects, key_of)
    finally:
        proc.stop()
        if with_server is not None:
            with_server.stop()


async def assert_nothing_new(backend: Backend, before: set[str]) -> None:
    """The backend holds exactly what it held before (waiting briefly: the spool of an upload cut off
    mid-stream may be removed just after the answer)."""

    def same() -> bool:
        added = backend.objects() - before
        assert not added, f"{backend.name} kept {sorted(added)}"
        return True

    await eventually(same, timeout=5, message=f"{backend.name}: a refused upload left nothing")


def escaped_files(work_dir: Path) -> list[Path]:
    """Files a path-like name could have written outside the upload root."""
    absolute = Path(ABSOLUTE_NAME)
    return [*work_dir.rglob("passwd*"), *([absolute] if absolute.exists() else [])]


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def owned(
    backend: Backend, http: httpx.AsyncClient, make_org: Any
) -> AsyncIterator[tuple[Any, dict[str, str], str]]:
    """A fresh org, its owner's headers and one of its bookings."""
    org = await make_org()
    headers = await owner(http, backend.url, org)
    created = await booking_of(http, backend.url, headers, f"bad-{uuid.uuid4().hex[:8]}@example.com")
    yield org, headers, created["id"]


async def test_oversize_is_413_with_and_without_content_length_and_nothing_is_stored(
    backend: Backend, http: httpx.AsyncClient, owned: Any
) -> None:
    _, headers, booking_id = owned
    before = backend.objects()
    declared = await upload(
        http, backend.url, headers, booking_id, jpeg_bytes(300, 300) + b"\0" * (LIMIT * 2)
    )
    assert_problem(declared, 413, "payload_too_large")
    await assert_nothing_new(backend, before)

    # Chunked: no Content-Length, so the file's bytes are counted while they stream.
    body, content_type = photo_form(b"\xff\xd8\xff" + b"\0" * (LIMIT + 1024))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await http.post(
        f"{backend.url}/v1/admin/bookings/{booking_id}/photos",
        content=chunks(),
        headers={**headers, "Content-Type": content_type},
    )
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert_problem(streamed, 413, "payload_too_large")
    await assert_nothing_new(backend, before)
    listed = await http.get(f"{backend.url}/v1/admin/bookings/{booking_id}/photos", headers=headers)
    assert listed.status_code == 200 and listed.json()["items"] == [], listed.text


async def test_html_named_jpg_is_415_and_a_truncated_jpeg_is_422(
    backend: Backend, http: httpx.AsyncClient, owned: Any
) -> None:
    _, headers, booking_id = owned
    before = backend.objects()
    html = b"<!doctype html><html><script>alert(1)</script></html>" * 8
    assert_problem(
        await upload(http, backend.url, headers, booking_id, html, filename="holiday.jpg"),
        415,
        "unsupported_media_type",
    )
    await assert_nothing_new(backend, before)
    cut = await upload(http, backend.url, headers, booking_id, jpeg_bytes(400, 300)[:600])
    assert_problem(cut, 422, "invalid_image")
    await assert_nothing_new(backend, before)


async def test_a_png_named_jpg_is_stored_as_png_and_its_signed_link_serves_it(
    backend: Backend, http: httpx.AsyncClient, owned: Any, stack: Any
) -> None:
    org, headers, booking_id = owned
    data = png_bytes()
    before = backend.objects()
    created = await upload(http, backend.url, headers, booking_id, data, filename="job.jpg")
    assert created.status_code == 201, created.text
    photo = created.json()
    assert (photo["mime"], photo["ext"]) == ("image/png", "png"), photo
    listed = await http.get(f"{backend.url}/v1/admin/bookings/{booking_id}/photos", headers=headers)
    [item] = listed.json()["items"]
    assert item["photo_id"] == photo["photo_id"] and item["mime"] == "image/png"

    # Superuser URL: media's row, read behind its back, names the key and the backend.
    [(key, stored_on)] = await sql(
        stack.admin_url,
        "SELECT storage_key, backend FROM media.order_photos WHERE id = %s",
        (uuid.UUID(photo["photo_id"]),),
    )
    assert stored_on == backend.name
    assert key == f"orders/{org.org_id}/{booking_id}/{photo['photo_id']}.png"
    assert {backend.key_of(name) for name in backend.objects() - before} == {key}

    granted = await http.put(
        f"{backend.url}/v1/admin/bookings/{booking_id}/photo-consent", headers=headers, json={"granted": True}
    )
    assert granted.status_code == 200, granted.text
    link = await http.get(
        f"{backend.url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers={**headers, **BROWSER}
    )
    assert link.status_code == 200, link.text
    opened = await http.get(backend.url + public_path(link.json()["url"]), headers=BROWSER)
    if opened.status_code == 302:  # r2 and Cloudflare Images: the backend's own short-lived URL
        opened = await http.get(opened.headers["location"])
    assert opened.status_code == 200, opened.text
    assert opened.content == data
    assert (hashlib.sha256(opened.content).hexdigest(), len(opened.content)) == (
        item["sha256"],
        item["bytes"],
    )


@pytest.mark.parametrize("filename", ["../../etc/passwd.jpg", "..\\x.jpg", ABSOLUTE_NAME])
async def test_path_like_filenames_never_reach_the_key(
    backend: Backend, http: httpx.AsyncClient, owned: Any, stack: Any, filename: str
) -> None:
    org, headers, booking_id = owned
    before = backend.objects()
    created = await upload(http, backend.url, headers, booking_id, jpeg_bytes(), filename=filename)
    assert created.status_code == 201, created.text
    photo_id = created.json()["photo_id"]
    [(key,)] = await sql(
        stack.admin_url, "SELECT storage_key FROM media.order_photos WHERE id = %s", (uuid.UUID(photo_id),)
    )
    assert key == f"orders/{org.org_id}/{booking_id}/{photo_id}.jpg"
    added = backend.objects() - before
    assert {backend.key_of(name) for name in added} == {key}
    for name in backend.objects():
        assert "passwd" not in name and ".." not in name and "\\" not in name and "absolute" not in name, name
    assert not escaped_files(Path(stack.work_dir))


async def test_another_orgs_booking_and_photo_are_404_and_nothing_is_stored(
    backend: Backend, http: httpx.AsyncClient, owned: Any, make_org: Any
) -> None:
    _, headers_a, booking_a = owned
    created = await upload(http, backend.url, headers_a, booking_a, jpeg_bytes())
    assert created.status_code == 201, created.text
    photo_a = created.json()["photo_id"]
    headers_b = await owner(http, backend.url, await make_org("Bad input B"))

    before = backend.objects()
    assert_problem(await upload(http, backend.url, headers_b, booking_a, jpeg_bytes()), 404)
    await assert_nothing_new(backend, before)
    assert_problem(await http.get(f"{backend.url}/v1/admin/photos/{photo_a}", headers=headers_b), 404)
    assert_problem(
        await http.get(f"{backend.url}/v1/admin/bookings/{booking_a}/photos", headers=headers_b), 404
    )
    assert_problem(
        await http.put(
            f"{backend.url}/v1/admin/bookings/{booking_a}/photo-consent",
            headers=headers_b,
            json={"granted": True},
        ),
        404,
    )
    assert_problem(
        await http.get(
            f"{backend.url}/v1/admin/photos/{photo_a}/signed_url", headers={**headers_b, **BROWSER}
        ),
        404,
    )
    # An id nobody has is the same 404.
    assert_problem(await upload(http, backend.url, headers_b, str(uuid.uuid4()), jpeg_bytes()), 404)
    await assert_nothing_new(backend, before)
