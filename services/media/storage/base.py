"""The interface the media service stores photos through, and the settings the backends read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

# Chunk size for streaming reads (local files, R2 bodies, Cloudflare blobs) and for copying uploads.
CHUNK_SIZE = 64 * 1024


class Storage(Protocol):
    name: str

    async def put(self, key: str, source: Path | bytes, content_type: str) -> None:
        """Store the bytes (or the file at `source`) under `key`, replacing what was there."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (the janitor may repeat itself)."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delivery_url(self, key: str, ttl_seconds: int, variant: str | None = None) -> str | None:
        """A short-lived URL the client is redirected to, or None (local): the service streams `open`."""
        ...

    def open(self, key: str) -> AsyncIterator[bytes]:
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
