"""The interface the media service stores photos through, and the settings the backends read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

# Chunk size for streaming reads (local files, R2 bodies, Cloudflare blobs) and for copying uploads.
CHUNK_SIZE = 64 * 1024


class Storage(Protocol):
    """Objects are written under a storage key (`canonical_key`) and then addressed by the reference
    `put` returns: the key itself for local and r2, Cloudflare's own image id for Cloudflare Images
    (which can keep an image private only when it has no custom id). A photo row keeps the reference
    in `backend_ref` (NULL: the key is the reference)."""

    name: str

    async def put(self, key: str, source: Path | bytes, content_type: str) -> str:
        """Store the bytes (or the file at `source`) for `key`; returns the reference to address the
        object by. Local and r2 replace what was under `key`; Cloudflare Images makes a new image
        with a fresh id each time (an older one is deleted by its own reference)."""
        ...

    async def delete(self, ref: str) -> None:
        """Remove the object; a missing object is not an error (the janitor may repeat itself)."""
        ...

    async def exists(self, ref: str) -> bool: ...

    async def delivery_url(self, ref: str, ttl_seconds: int, variant: str | None = None) -> str | None:
        """A short-lived URL the client is redirected to, or None (local): the service streams `open`."""
        ...

    def open(self, ref: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks. Raises StorageNotFound (on first iteration) when missing."""
        ...

    async def aclose(self) -> None:
        """Release connections (HTTP pools); the storage is not used afterwards."""
        ...


class StorageConfig(Protocol):
    """The settings `build_storage` reads (the service's MediaSettings has them; seed 000/002 names,
    lower-cased as pydantic-settings reads them). Read-only properties, so a plain `str` field satisfies
    `str | Path`."""

    @property
    def order_storage_backend(self) -> str: ...

    @property
    def order_upload_root(self) -> str | Path: ...

    @property
    def r2_bucket(self) -> str: ...

    @property
    def r2_access_key(self) -> str: ...

    @property
    def r2_secret_key(self) -> str: ...

    @property
    def r2_endpoint(self) -> str: ...

    @property
    def r2_region(self) -> str: ...

    @property
    def cf_images_account_id(self) -> str: ...

    @property
    def cf_images_account_hash(self) -> str: ...

    @property
    def cf_images_api_token(self) -> str: ...

    @property
    def cf_images_signing_key(self) -> str: ...

    @property
    def cf_images_default_variant(self) -> str: ...

    @property
    def cf_images_thumbnail_variant(self) -> str: ...

    @property
    def cf_images_api_base(self) -> str: ...

    @property
    def cf_images_delivery_base(self) -> str: ...

    @property
    def storage_timeout_seconds(self) -> float: ...

    @property
    def storage_max_attempts(self) -> int: ...
