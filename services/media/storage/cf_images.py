"""Cloudflare Images: ORDER_STORAGE_BACKEND=cloudflare_images | cf_images.

Uploads go to the Images API v1 WITHOUT a custom id and with `requireSignedURLs=true`: Cloudflare's
"Upload via custom path" page says images with a custom id cannot be made private, so the image gets
Cloudflare's own id, which `put` returns and the photo row keeps (`backend_ref`). The canonical key is
sent as metadata (`{"key": ...}`, never shown to viewers), so an operator can match an image to its photo.
Cloudflare then serves the image only through a signed URL: `exp` (unix seconds) and `sig`, the hex
HMAC-SHA256, keyed with CF_IMAGES_SIGNING_KEY, of the URL's path and query up to and including `exp`
(Cloudflare's "Serve private images" page). The API base and the delivery host are settings, so tests
point them at a local server speaking the same API.

References are Cloudflare's generated ids (hex and dashes) or, for images stored before this change
under a custom id, a canonical key (`check_key`); anything else is refused as InvalidStorageKey.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from services.media.storage.errors import (
    InvalidStorageKey,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from services.media.storage.keys import check_key
from services.media.storage.threads import run

DEFAULT_API_BASE = "https://api.cloudflare.com/client/v4"
DEFAULT_DELIVERY_BASE = "https://imagedelivery.net"
# Cloudflare's generated image ids are UUID-shaped (hex groups and dashes); documented examples show
# groups of varying length, so only the alphabet and a length are checked.
_GENERATED_ID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{7,63}")
_BACKOFF_SECONDS = 0.2
_VARIANT = re.compile(r"[A-Za-z0-9_-]{1,64}")


class CloudflareImagesStorage:
    name = "cloudflare_images"

    def __init__(
        self,
        *,
        account_id: str,
        account_hash: str,
        api_token: str,
        signing_key: str,
        default_variant: str = "public",
        thumbnail_variant: str = "thumbnail",
        api_base: str = DEFAULT_API_BASE,
        delivery_base: str = DEFAULT_DELIVERY_BASE,
        timeout_seconds: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self.max_attempts = max(1, max_attempts)
        self.account_hash = account_hash
        self.signing_key = signing_key.encode()
        self.default_variant = default_variant
        self.thumbnail_variant = thumbnail_variant
        self.delivery_base = delivery_base.rstrip("/")
        self._images_path = f"/accounts/{quote(account_id, safe='')}/images/v1"
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=httpx.Timeout(timeout_seconds),
        )

    def _image_path(self, ref: str) -> str:
        # A legacy custom id holds slashes: one path segment, so they are percent-encoded.
        return f"{self._images_path}/{quote(check_ref(ref), safe='')}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, tried up to `max_attempts` times on transient failures. Deletes and reads are
        safe to repeat; an upload repeated after a timeout may leave a second, unreferenced private image
        (Cloudflare has no idempotency key for uploads): its metadata names the key, for an operator."""
        problem = ""
        for attempt in range(self.max_attempts):
            if attempt:
                await asyncio.sleep(min(_BACKOFF_SECONDS * 2 ** (attempt - 1), 2.0))
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.TransportError as error:  # refused, reset, timed out
                problem = type(error).__name__
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = str(response.status_code)
                continue
            return response
        raise StorageUnavailable(f"cloudflare images: {problem}")

    async def put(self, key: str, source: Path | bytes, content_type: str) -> str:
        """Upload as a new private image; returns Cloudflare's id for it (the object's reference)."""
        check_key(key)
        data = (
            bytes(source)
            if isinstance(source, bytes | bytearray | memoryview)
            else await run(source.read_bytes)
        )
        filename = key.rsplit("/", 1)[-1]
        response = await self._request(
            "POST",
            self._images_path,
            files={"file": (filename, data, content_type)},
            data={"requireSignedURLs": "true", "metadata": json.dumps({"key": key})},
        )
        envelope = _envelope(response)
        if not (response.is_success and envelope.get("success") is True):
            raise StorageError(
                f"cloudflare images upload refused: {response.status_code} {_error_codes(response)}"
            )
        result = envelope.get("result")
        if not isinstance(result, dict):
            result = {}
        image_id = result.get("id")
        if not isinstance(image_id, str) or not _GENERATED_ID.fullmatch(image_id):
            raise StorageError("cloudflare images upload answered without a usable image id")
        if result.get("requireSignedURLs") is False:
            # Stored but public: never keep it (the link would outlive our expiry).
            await self.delete(image_id)
            raise StorageError("cloudflare images stored the image without requireSignedURLs")
        return image_id

    async def delete(self, ref: str) -> None:
        response = await self._request("DELETE", self._image_path(ref))
        if response.status_code == 404 or response.is_success:
            return
        raise StorageError(
            f"cloudflare images delete refused: {response.status_code} {_error_codes(response)}"
        )

    async def exists(self, ref: str) -> bool:
        response = await self._request("GET", self._image_path(ref))
        if response.status_code == 404:
            return False
        if response.is_success:
            return True
        raise StorageError(
            f"cloudflare images lookup refused: {response.status_code} {_error_codes(response)}"
        )

    def variant_name(self, variant: str | None) -> str:
        """None or "default": CF_IMAGES_DEFAULT_VARIANT; "thumbnail": CF_IMAGES_THUMBNAIL_VARIANT; any
        other plain name is passed as a Cloudflare variant name."""
        if variant in (None, "", "default"):
            return self.default_variant
        if variant == "thumbnail":
            return self.thumbnail_variant
        if not _VARIANT.fullmatch(variant):
            raise ValueError("variant must be a plain name")
        return variant

    async def delivery_url(self, ref: str, ttl_seconds: int, variant: str | None = None) -> str | None:
        check_ref(ref)
        expires = int(time.time()) + max(1, int(ttl_seconds))
        return signed_delivery_url(
            self.delivery_base, self.account_hash, ref, self.variant_name(variant), expires, self.signing_key
        )

    async def open(self, ref: str) -> AsyncIterator[bytes]:
        """The original image (the API's `/blob`), for when the service streams rather than redirects."""
        path = f"{self._image_path(ref)}/blob"
        try:
            async with self._client.stream("GET", path) as response:
                if response.status_code == 404:
                    raise StorageNotFound(ref)
                if response.status_code == 429 or response.status_code >= 500:
                    raise StorageUnavailable(f"cloudflare images: {response.status_code}")
                if not response.is_success:
                    raise StorageError(f"cloudflare images blob refused: {response.status_code}")
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.TransportError as error:
            raise StorageUnavailable(f"cloudflare images: {type(error).__name__}") from error

    async def aclose(self) -> None:
        await self._client.aclose()


def check_ref(ref: str) -> str:
    """`ref` if it is a Cloudflare-generated id or a (legacy custom id) canonical key; else
    InvalidStorageKey, so no path-like value reaches a URL."""
    if "/" in ref:
        return check_key(ref)
    if not _GENERATED_ID.fullmatch(ref):
        raise InvalidStorageKey("not a Cloudflare image id")
    return ref


def signed_delivery_url(
    delivery_base: str, account_hash: str, image_id: str, variant: str, expires: int, signing_key: bytes
) -> str:
    """`{base}/{account_hash}/{image_id}/{variant}?exp={expires}&sig={hex}`, the signature the HMAC-SHA256
    of `/{account_hash}/{image_id}/{variant}?exp={expires}` (the URL's path and query before `sig`)."""
    # Cloudflare asks for `%` in custom ids to be sent as %25; our keys hold no `%` (check_key), but
    # quoting keeps the URL right whatever the id.
    path = f"/{quote(account_hash, safe='')}/{quote(image_id, safe='/')}/{quote(variant, safe='')}"
    to_sign = f"{path}?exp={expires}"
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{delivery_base.rstrip('/')}{to_sign}&sig={signature}"


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_codes(response: httpx.Response) -> list[int]:
    errors = _envelope(response).get("errors") or []
    return [
        error["code"] for error in errors if isinstance(error, dict) and isinstance(error.get("code"), int)
    ]
