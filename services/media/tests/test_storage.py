"""The storage backends against real servers: the file system (local), moto's S3 server (r2) and a
local Cloudflare Images stand-in (cf_images_server.py). One behavioural suite runs on all three; then
each backend's own edges: presigned expiry, signature checks, transient failures, path traversal,
atomic writes. No Postgres, NATS or service process is needed."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from services.media.storage import (
    CloudflareImagesStorage,
    InvalidStorageKey,
    LocalStorage,
    R2Storage,
    Storage,
    StorageConfigError,
    StorageNotFound,
    StorageSettings,
    StorageUnavailable,
    build_storage,
    canonical_key,
    check_key,
    config_problems,
    legacy_candidates,
    resolve_legacy,
)
from services.media.storage.local import TEMP_PREFIX
from services.media.tests.cf_images_server import CloudflareImagesServer, StatusServer, StoredImage
from services.media.tests.s3_presign_gate import PresignGate
from tools.devstack import free_port, port_open, wait_for

BUCKET = "cws-photos-test"
R2_ACCESS = "test-access-key"
R2_SECRET = "test-secret-key"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * 64 * 1024 + 17)  # several chunks, not a multiple of one


def new_key(ext: str = "png") -> str:
    return canonical_key(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), ext)


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.open(key)])


# --- servers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for(lambda: port_open("127.0.0.1", port), "moto S3 server")
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=R2_ACCESS,
        aws_secret_access_key=R2_SECRET,
    )
    client.create_bucket(Bucket=BUCKET)
    # Everything goes through the gate, which checks presigned URLs (moto does not).
    gate = PresignGate(endpoint, {R2_ACCESS: R2_SECRET}).start()
    yield gate.url
    gate.stop()
    server.stop()


@pytest.fixture(scope="module")
def cf_server() -> Iterator[CloudflareImagesServer]:
    server = CloudflareImagesServer().start()
    yield server
    server.stop()


def settings_for(
    backend: str, tmp_path: Path, s3_endpoint: str, cf: CloudflareImagesServer
) -> StorageSettings:
    return StorageSettings(
        order_storage_backend=backend,
        order_upload_root=tmp_path / "uploads",
        r2_bucket=BUCKET,
        r2_access_key=R2_ACCESS,
        r2_secret_key=R2_SECRET,
        r2_endpoint=s3_endpoint,
        r2_region="us-east-1",
        cf_images_account_id=cf.account_id,
        cf_images_account_hash=cf.account_hash,
        cf_images_api_token=cf.api_token,
        cf_images_signing_key=cf.signing_key,
        cf_images_api_base=cf.api_base,
        cf_images_delivery_base=cf.url,
        storage_timeout_seconds=5.0,
        storage_max_attempts=2,
    )


@pytest.fixture(params=["local", "r2", "cf_images"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str, cf_server: CloudflareImagesServer
) -> AsyncIterator[Storage]:
    built = build_storage(settings_for(request.param, tmp_path, s3_endpoint, cf_server))
    yield built
    await built.aclose()


# --- one behavioural suite, every backend -----------------------------------------------------------


async def fetch_delivered(storage: Storage, key: str, ttl: int = 60) -> bytes:
    """What a client gets: the backend's URL when it has one, else the bytes the service streams."""
    url = await storage.delivery_url(key, ttl)
    if url is None:
        return await read_all(storage, key)
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.content


async def test_put_exists_deliver_open_delete(storage: Storage, tmp_path: Path) -> None:
    key = new_key()
    assert not await storage.exists(key)

    ref = await storage.put(key, PNG, "image/png")
    # Local and r2 address the object by its key; Cloudflare Images by the id it gave the image.
    assert (ref == key) == (storage.name != "cloudflare_images")
    assert await storage.exists(ref)
    assert await fetch_delivered(storage, ref) == PNG
    assert await read_all(storage, ref) == PNG

    # A second put (now from a file on disk, as the service passes its spool): local and r2 replace
    # the object under the key; Cloudflare Images makes a new image, the old one is deleted by its ref.
    source = tmp_path / "second.png"
    source.write_bytes(PNG[::-1])
    second = await storage.put(key, source, "image/png")
    assert await read_all(storage, second) == PNG[::-1]
    if second != ref:
        assert await read_all(storage, ref) == PNG
        await storage.delete(ref)
        assert not await storage.exists(ref)

    await storage.delete(second)
    assert not await storage.exists(second)
    await storage.delete(second)  # idempotent: the janitor may repeat a delete

    with pytest.raises(StorageNotFound):
        await read_all(storage, second)


async def test_missing_object(storage: Storage) -> None:
    key = new_key("jpg")
    assert not await storage.exists(key)
    await storage.delete(key)
    with pytest.raises(StorageNotFound):
        await read_all(storage, key)
    assert await resolve_legacy(storage, key) is None


# Not on Cloudflare Images: objects there are not stored under keys (test_cf_legacy_custom_id_still_served).
@pytest.mark.parametrize("storage", ["local", "r2"], indirect=True)
async def test_legacy_aliases_resolve_for_reads(storage: Storage) -> None:
    canonical = new_key("jpg")
    without_extension = canonical.rsplit(".", 1)[0]
    await storage.put(without_extension, b"legacy bytes", "image/jpeg")
    assert await resolve_legacy(storage, canonical) == without_extension
    assert await read_all(storage, without_extension) == b"legacy bytes"
    # The seed's older layout, orders/{org_id}/{order_id}/{file}, is a valid key for reads and deletes.
    older = f"orders/{uuid.uuid4()}/{uuid.uuid4()}/photo_1.jpeg"
    await storage.put(older, b"older", "image/jpeg")
    assert await storage.exists(older)
    await storage.delete(older)
    await storage.delete(without_extension)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "orders/../../etc/passwd",
        "orders/a/../../b",
        "orders/./a",
        "orders//a",
        "orders/a/",
        "orders\\..\\a",
        "orders/%2e%2e/a",
        "orders/a b",
        "orders/a\x00b",
        "other/a/b",
        "orders",
        "",
    ],
)
async def test_path_like_keys_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        await storage.put(key, b"x", "image/png")
    with pytest.raises(InvalidStorageKey):
        await storage.exists(key)
    with pytest.raises(InvalidStorageKey):
        await storage.delete(key)
    with pytest.raises(InvalidStorageKey):
        await storage.delivery_url(key, 60)
    with pytest.raises(InvalidStorageKey):
        await read_all(storage, key)


# --- keys -------------------------------------------------------------------------------------------


def test_canonical_key_shape_and_validation() -> None:
    org, booking, photo = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert canonical_key(str(org), str(booking), str(photo), "JPG") == f"orders/{org}/{booking}/{photo}.jpg"
    # Any spelling of a UUID gives the one key.
    assert (
        canonical_key(str(org).upper(), booking.hex, f"{{{photo}}}", ".png")
        == f"orders/{org}/{booking}/{photo}.png"
    )
    for bad in [
        ("..", str(booking), str(photo), "jpg"),
        (str(org), "a/b", str(photo), "jpg"),
        (str(org), str(booking), "x", "jpg"),
    ]:
        with pytest.raises(InvalidStorageKey):
            canonical_key(*bad)
    for ext in ["html", "svg", "jpg/../x", "", "php"]:
        with pytest.raises(InvalidStorageKey):
            canonical_key(str(org), str(booking), str(photo), ext)


def test_legacy_candidates() -> None:
    key = f"orders/{uuid.uuid4()}/{uuid.uuid4()}/{uuid.uuid4()}.jpg"
    stem = key[: -len(".jpg")]
    assert legacy_candidates(key) == [key, f"{stem}.jpeg", stem]
    assert legacy_candidates(stem) == [stem]
    assert check_key(key) == key


# --- local ------------------------------------------------------------------------------------------


async def test_local_refuses_symlinks(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    org = str(uuid.uuid4())
    (storage.root / "orders").mkdir()
    (storage.root / "orders" / org).symlink_to(outside, target_is_directory=True)
    key = f"orders/{org}/secret.jpg"
    with pytest.raises(InvalidStorageKey):
        await read_all(storage, key)
    with pytest.raises(InvalidStorageKey):
        await storage.put(key, b"overwrite", "image/jpeg")
    with pytest.raises(InvalidStorageKey):
        await storage.delete(key)
    assert (outside / "secret.jpg").read_bytes() == b"secret"


async def test_local_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    key = new_key()
    await storage.put(key, b"first version", "image/png")
    target = storage.path_for(key)

    # The copy fails half-way (the source is a directory: open() refuses it after the temp file exists).
    with pytest.raises(OSError):
        await storage.put(key, tmp_path, "image/png")
    # The old object is intact and no temp file is left beside it.
    assert target.read_bytes() == b"first version"
    assert [p.name for p in target.parent.iterdir()] == [target.name]

    # Readers racing a writer see the old or the new bytes, never a prefix.
    big = os.urandom(2 * 1024 * 1024)
    seen: set[bytes] = set()

    async def reader() -> None:
        for _ in range(20):
            seen.add(await read_all(storage, key))

    await asyncio.gather(storage.put(key, big, "image/png"), reader())
    assert seen <= {b"first version", big}
    assert target.read_bytes() == big
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


async def test_local_has_no_delivery_url(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    key = new_key()
    await storage.put(key, PNG, "image/png")
    assert await storage.delivery_url(key, 60) is None
    assert storage.path_for(key).is_relative_to(tmp_path / "root")


# --- r2 ---------------------------------------------------------------------------------------------


async def test_r2_presigned_url_expires_and_keeps_content_type(
    s3_endpoint: str, tmp_path: Path, cf_server: CloudflareImagesServer
) -> None:
    storage = build_storage(settings_for("cloudflare_r2", tmp_path, s3_endpoint, cf_server))
    assert isinstance(storage, R2Storage)
    key = new_key()
    await storage.put(key, PNG, "image/png")
    # 3 s, not 1: the signing time is in whole seconds, so a 1-second link signed late in a second
    # had expired before a busy CI machine fetched it (403 where 200 was expected).
    url = await storage.delivery_url(key, 3)
    assert url is not None and "X-Amz-Expires=3" in url
    async with httpx.AsyncClient() as client:
        fresh = await client.get(url)
        assert fresh.status_code == 200
        assert fresh.content == PNG
        assert fresh.headers["content-type"] == "image/png"
        await asyncio.sleep(4.1)
        stale = await client.get(url)
        assert stale.status_code == 403, stale.text
        # Tampering with the key invalidates the signature.
        forged = await client.get(url.replace(key, new_key()))
        assert forged.status_code == 403
    await storage.delete(key)
    await storage.aclose()


@pytest.mark.parametrize("status", [500, 429])
async def test_r2_server_errors_are_transient(status: int) -> None:
    server = StatusServer(status).start()
    storage = R2Storage(
        bucket=BUCKET, access_key=R2_ACCESS, secret_key=R2_SECRET, endpoint=server.url, max_attempts=1
    )
    try:
        with pytest.raises(StorageUnavailable):
            await storage.put(new_key(), b"x", "image/png")
        with pytest.raises(StorageUnavailable):
            await storage.delete(new_key())
        with pytest.raises(StorageUnavailable):
            await storage.exists(new_key())
    finally:
        await storage.aclose()
        server.stop()


async def test_r2_server_down_is_transient() -> None:
    storage = R2Storage(
        bucket=BUCKET,
        access_key=R2_ACCESS,
        secret_key=R2_SECRET,
        endpoint=f"http://127.0.0.1:{free_port()}",
        timeout_seconds=1,
        max_attempts=1,
    )
    with pytest.raises(StorageUnavailable):
        await storage.delete(new_key())
    with pytest.raises(StorageUnavailable):
        await read_all(storage, new_key())
    await storage.aclose()


# --- cloudflare images ------------------------------------------------------------------------------


def cf_storage(
    server: CloudflareImagesServer, api_token: str = "", max_attempts: int = 1
) -> CloudflareImagesStorage:
    return CloudflareImagesStorage(
        account_id=server.account_id,
        account_hash=server.account_hash,
        api_token=api_token or server.api_token,
        signing_key=server.signing_key,
        api_base=server.api_base,
        delivery_base=server.url,
        timeout_seconds=2,
        max_attempts=max_attempts,
    )


async def test_cf_upload_is_private_and_served_only_signed(cf_server: CloudflareImagesServer) -> None:
    storage = cf_storage(cf_server)
    key = new_key("webp")
    ref = await storage.put(key, b"webp bytes", "image/webp")
    # Cloudflare's own id, no custom id: only such an image can require signed URLs.
    assert ref != key and "/" not in ref and str(uuid.UUID(ref)) == ref
    stored = cf_server.images[ref]
    assert (stored.data, stored.content_type, stored.require_signed) == (b"webp bytes", "image/webp", True)
    assert key in stored.metadata  # the canonical key travels as metadata, for an operator
    assert key not in cf_server.images

    default = await storage.delivery_url(ref, 60)
    thumbnail = await storage.delivery_url(ref, 60, "thumbnail")
    assert default is not None and thumbnail is not None
    assert default.startswith(f"{cf_server.url}/{cf_server.account_hash}/{ref}/public?exp=")
    assert f"/{ref}/thumbnail?exp=" in thumbnail
    async with httpx.AsyncClient() as client:
        assert (await client.get(thumbnail)).content == b"webp bytes"
        # Private: the same image without exp/sig is refused, whatever the variant.
        for variant in ("public", "thumbnail"):
            unsigned = f"{cf_server.url}/{cf_server.account_hash}/{ref}/{variant}"
            assert (await client.get(unsigned)).status_code == 403
        # The server checks the signature: a changed exp or another variant is refused.
        exp = default.split("exp=")[1].split("&")[0]
        assert (await client.get(default.replace(f"exp={exp}", f"exp={int(exp) + 60}"))).status_code == 403
        assert (await client.get(default.replace("/public?", "/original?"))).status_code == 403
        # Minted with ttl 1, refused once expired.
        short = await storage.delivery_url(ref, 1)
        assert short is not None
        await asyncio.sleep(2.1)
        assert (await client.get(short)).status_code == 403
    with pytest.raises(ValueError):
        await storage.delivery_url(ref, 60, "../x")
    await storage.delete(ref)
    assert ref not in cf_server.images
    await storage.aclose()


async def test_cf_stand_in_refuses_custom_id_with_signed_urls(cf_server: CloudflareImagesServer) -> None:
    """As Cloudflare does: a custom id and requireSignedURLs together are refused (why `put` sends none)."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{cf_server.api_base}/accounts/{cf_server.account_id}/images/v1",
            headers={"Authorization": f"Bearer {cf_server.api_token}"},
            files={"file": ("a.png", b"png", "image/png")},
            data={"id": new_key(), "requireSignedURLs": "true"},
        )
    assert response.status_code == 400
    assert response.json()["success"] is False


async def test_cf_legacy_custom_id_still_served(cf_server: CloudflareImagesServer) -> None:
    """An image stored before this change under its key as custom id (public: NULL backend_ref, so the
    key is the reference) is still found, streamed, signed and deleted by that key."""
    storage = cf_storage(cf_server)
    key = new_key("jpg")
    cf_server.images[key] = StoredImage(b"legacy", "image/jpeg", "legacy.jpg")
    assert await storage.exists(key)
    assert await read_all(storage, key) == b"legacy"
    url = await storage.delivery_url(key, 60)
    assert url is not None and f"/{key}/public?exp=" in url
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"legacy"
    await storage.delete(key)
    assert not await storage.exists(key)
    await storage.aclose()


async def test_cf_refuses_refs_that_are_not_ids(cf_server: CloudflareImagesServer) -> None:
    storage = cf_storage(cf_server)
    for ref in ("orders", "not-an-id", "..", "abc", "zz000000-0000"):
        with pytest.raises(InvalidStorageKey):
            await storage.exists(ref)
        with pytest.raises(InvalidStorageKey):
            await storage.delivery_url(ref, 60)
    await storage.aclose()


async def test_cf_wrong_token_is_a_permanent_error(cf_server: CloudflareImagesServer) -> None:
    storage = cf_storage(cf_server, api_token="wrong")
    with pytest.raises(Exception) as raised:
        await storage.put(new_key(), b"x", "image/png")
    assert not isinstance(raised.value, StorageUnavailable)
    assert "401" in str(raised.value)
    await storage.aclose()


@pytest.mark.parametrize("status", [500, 429])
async def test_cf_server_errors_are_transient(status: int) -> None:
    server = CloudflareImagesServer(fail_with=status).start()
    storage = cf_storage(server)
    try:
        with pytest.raises(StorageUnavailable):
            await storage.put(new_key(), b"x", "image/png")
        with pytest.raises(StorageUnavailable):
            await storage.delete(new_key())
        with pytest.raises(StorageUnavailable):
            await storage.exists(new_key())
        with pytest.raises(StorageUnavailable):
            await read_all(storage, new_key())
    finally:
        await storage.aclose()
        server.stop()


async def test_cf_retries_transient_failures_then_gives_up() -> None:
    server = CloudflareImagesServer(fail_with=503).start()
    storage = cf_storage(server, max_attempts=3)
    try:
        with pytest.raises(StorageUnavailable):
            await storage.delete(new_key())
        assert len(server.requests) == 3
    finally:
        await storage.aclose()
        server.stop()


async def test_cf_server_down_is_transient() -> None:
    server = CloudflareImagesServer().start()
    server.stop()
    storage = cf_storage(server)
    with pytest.raises(StorageUnavailable):
        await storage.delete(new_key())
    await storage.aclose()


# --- configuration ----------------------------------------------------------------------------------


def test_build_storage_by_name_and_missing_settings(tmp_path: Path) -> None:
    base = StorageSettings(order_upload_root=tmp_path)
    assert build_storage(base).name == "local"
    assert config_problems(replace(base, order_storage_backend="r2")) == [
        "R2_BUCKET is required for ORDER_STORAGE_BACKEND=r2",
        "R2_ACCESS_KEY is required for ORDER_STORAGE_BACKEND=r2",
        "R2_SECRET_KEY is required for ORDER_STORAGE_BACKEND=r2",
    ]
    assert len(config_problems(replace(base, order_storage_backend="cf_images"))) == 4
    with pytest.raises(StorageConfigError):
        build_storage(replace(base, order_storage_backend="cloudflare_images"))
    with pytest.raises(StorageConfigError):
        build_storage(replace(base, order_storage_backend="ftp"))
