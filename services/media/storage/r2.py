"""R2 (or any S3-compatible store) through boto3: ORDER_STORAGE_BACKEND=r2 | cloudflare_r2.

boto3 is synchronous, so every network call runs in a thread; one client is made at start and shared
(boto3 clients are thread-safe). Timeouts and retries (botocore "standard" mode: 5xx, throttling and
connection errors, with backoff) are set on the client; what still fails is mapped to our errors:
connection trouble, 5xx and throttling to StorageUnavailable (the janitor tries again), a missing object
to StorageNotFound, anything else (bad credentials, no such bucket) to StorageError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.media.storage.base import CHUNK_SIZE
from services.media.storage.errors import StorageError, StorageNotFound, StorageUnavailable
from services.media.storage.keys import check_key
from services.media.storage.threads import run

T = TypeVar("T")

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "TooManyRequests",
}


class R2Storage:
    name = "r2"

    def __init__(
        self,
        *,
        bucket: str,
        access_key: str,
        secret_key: str,
        endpoint: str = "",
        region: str = "auto",
        timeout_seconds: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        config = Config(
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            retries={"mode": "standard", "max_attempts": max(1, max_attempts)},
            signature_version="s3v4",
            # Path-style URLs work on R2, MinIO and moto alike; virtual hosts need DNS per bucket.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # botocore >= 1.36 adds CRC checksums (and aws-chunked bodies for file uploads) to every
            # PutObject by default; S3-compatible stores have refused these. Only when the API needs one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or "auto",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    async def _call(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await run(function, **kwargs)
        except ClientError as error:
            raise _mapped(error) from error
        except BotoCoreError as error:
            # Endpoint unreachable, timeouts, connection reset: nothing the caller can fix.
            raise StorageUnavailable(f"r2: {type(error).__name__}") from error

    async def put(self, key: str, source: Path | bytes, content_type: str) -> str:
        """Returns `key`: on this backend the key is the object's reference."""
        check_key(key)
        if isinstance(source, bytes | bytearray | memoryview):
            await self._call(
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=bytes(source),
                ContentType=content_type,
            )
            return key
        with open(source, "rb") as body:  # noqa: ASYNC230 - opening is instant; the upload runs in a thread
            await self._call(
                self._client.put_object, Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        return key

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            # S3 answers 204 for a missing key too; NoSuchKey is handled for stores that do not.
            await self._call(self._client.delete_object, Bucket=self.bucket, Key=key)
        except StorageNotFound:
            return

    async def exists(self, key: str) -> bool:
        check_key(key)
        try:
            await self._call(self._client.head_object, Bucket=self.bucket, Key=key)
        except StorageNotFound:
            return False
        return True

    async def delivery_url(self, key: str, ttl_seconds: int, variant: str | None = None) -> str | None:
        check_key(key)
        # Signing is local computation (no request), so it stays on the loop: minting a link is fast.
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=max(1, int(ttl_seconds))
        )
        return url

    async def open(self, key: str) -> AsyncIterator[bytes]:
        check_key(key)
        response = await self._call(self._client.get_object, Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            while True:
                try:
                    chunk: bytes = await run(body.read, CHUNK_SIZE)
                except BotoCoreError as error:
                    raise StorageUnavailable(f"r2: {type(error).__name__}") from error
                if not chunk:
                    break
                yield chunk
        finally:
            await run(body.close)

    async def aclose(self) -> None:
        await run(self._client.close)


def _mapped(error: ClientError) -> StorageError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
        return StorageNotFound(code or "not found")
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return StorageUnavailable(f"r2: {status} {code}")
    return StorageError(f"r2: {status} {code}")
