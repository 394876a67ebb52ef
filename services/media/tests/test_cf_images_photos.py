"""Photos on Cloudflare Images, end to end: a media process with ORDER_STORAGE_BACKEND=cloudflare_images
at the local stand-in of the Images API (services/media/tests/cf_images_server.py), behind its own
gateway, on the suite's database. An upload is stored WITHOUT a custom id and with requireSignedURLs,
the row keeps Cloudflare's id as `backend_ref`, the public link redirects to a signed URL that serves
the photo while the same URL unsigned is refused, and a delete's tombstone carries the id, so the
janitor removes that image."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import media_env
from gateway.tests.test_photo_links import BROWSER, booking_of, photo_of, public_path
from services.media.tests.cf_images_server import CloudflareImagesServer
from services.media.tests.test_janitor import run_janitor
from tools.processes import service_proc
from tools.testkit import owner, sql


@pytest.fixture(scope="module")
def cf_server() -> Iterator[CloudflareImagesServer]:
    server = CloudflareImagesServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cf_media(stack: Any, booking: Any, notify: Any, cf_server: CloudflareImagesServer) -> Iterator[Any]:
    env = {
        **media_env(stack, booking, notify),
        "ORDER_STORAGE_BACKEND": "cloudflare_images",
        "CF_IMAGES_ACCOUNT_ID": cf_server.account_id,
        "CF_IMAGES_ACCOUNT_HASH": cf_server.account_hash,
        "CF_IMAGES_API_TOKEN": cf_server.api_token,
        "CF_IMAGES_SIGNING_KEY": cf_server.signing_key,
        "CF_IMAGES_API_BASE": cf_server.api_base,
        "CF_IMAGES_DELIVERY_BASE": cf_server.url,
    }
    proc = service_proc("media", env, stack.work_dir / "logs", label="media-cf").start().wait_ready()
    yield proc
    proc.stop()


async def test_cloudflare_images_photos_are_private_and_tracked_by_their_id(
    gateways: Any, cf_media: Any, cf_server: CloudflareImagesServer, stack: Any, http: Any, make_org: Any
) -> None:
    url = gateways.get(MEDIA_GRPC_TARGET=cf_media.target).url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await booking_of(http, url, headers, f"cf-{uuid.uuid4().hex[:8]}@example.com")
    photo = await photo_of(http, url, headers, booking["id"])
    photo_id = uuid.UUID(photo["photo_id"])

    # Superuser URL: reading media's row behind its back.
    [(key, ref, backend)] = await sql(
        stack.admin_url,
        "SELECT storage_key, backend_ref, backend FROM media.order_photos WHERE id = %s",
        (photo_id,),
    )
    assert backend == "cloudflare_images"
    assert key == f"orders/{org.org_id}/{booking['id']}/{photo_id}.jpg"
    # Stored under Cloudflare's own id, private; nothing under the key as a custom id.
    assert ref in cf_server.images and key not in cf_server.images
    assert cf_server.images[ref].require_signed

    granted = await http.put(
        f"{url}/v1/admin/bookings/{booking['id']}/photo-consent", headers=headers, json={"granted": True}
    )
    assert granted.status_code == 200, granted.text
    link = await http.get(f"{url}/v1/admin/photos/{photo_id}/signed_url", headers={**headers, **BROWSER})
    assert link.status_code == 200, link.text
    redirected = await http.get(url + public_path(link.json()["url"]), headers=BROWSER)
    assert redirected.status_code == 302, redirected.text
    signed = redirected.headers["location"]
    assert f"/{cf_server.account_hash}/{ref}/" in signed and "sig=" in signed
    served = await http.get(signed)
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == photo["sha256"]
    parts = urlsplit(signed)
    unsigned = await http.get(f"{parts.scheme}://{parts.netloc}{parts.path}")
    assert unsigned.status_code == 403

    # A delete tombstones the image by its id; the janitor (this backend's media) removes that image.
    gone = await http.delete(f"{url}/v1/admin/photos/{photo_id}", headers=headers)
    assert gone.status_code == 204, gone.text
    [(tombstone_key, tombstone_ref)] = await sql(
        stack.admin_url,
        "SELECT storage_key, backend_ref FROM media.photo_tombstones WHERE photo_id = %s",
        (photo_id,),
    )
    assert (tombstone_key, tombstone_ref) == (key, ref)
    assert ref in cf_server.images
    await run_janitor(cf_media)
    assert ref not in cf_server.images
    assert (
        await sql(stack.admin_url, "SELECT 1 FROM media.photo_tombstones WHERE photo_id = %s", (photo_id,))
        == []
    )
