"""Media's settings: the seed 002 "Storage/photos" group (ORDER_*, R2_*, CF_IMAGES_*, PHOTO_*).

Other modules of media add their own fields here (small edits); this file holds the storage backend
choice, the upload limits and the production check that a chosen backend has what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from libs.common.settings import CommonSettings, CsvList, split_csv

# Every spelling the seeds use, by the backend it names.
BACKEND_ALIASES = {
    "local": "local",
    "r2": "r2",
    "cloudflare_r2": "r2",
    "s3": "r2",
    "cloudflare_images": "cloudflare_images",
    "cf_images": "cloudflare_images",
}
# What Pillow can open and verify with the wheels we ship (HEIC needs a plugin we do not install).
DEFAULT_ALLOWED_MIME = ("image/jpeg", "image/png", "image/webp")
MIB = 1024 * 1024


class MediaSettings(CommonSettings):
    # media calls booking (does the booking exist, who is assigned) and later notify: its own key; it
    # serves the gateway, jobs and billing (their public keys).
    CALLS_SERVICES: ClassVar[bool] = True
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "media"
    media_grpc_port: int = 50054
    media_http_port: int = 8104
    booking_grpc_target: str = "127.0.0.1:50052"
    notify_grpc_target: str = "127.0.0.1:50055"

    # --- storage (seed 002 "Storage configuration") -------------------------------------------------
    # local | r2 (cloudflare_r2) | cloudflare_images (cf_images); aliases are normalised.
    order_storage_backend: str = "local"
    # The local backend's root (and the spool of uploads being checked, under .incoming/).
    order_upload_root: Path = Path("tmp")
    order_photo_max_bytes: int = Field(default=10 * MIB, ge=1024, le=200 * MIB)
    # A comma-separated list; the type is decided from the content, never from the name or header.
    order_photo_allowed_mime: CsvList = Field(default_factory=lambda: list(DEFAULT_ALLOWED_MIME))

    # Signed photo links (services/media/links.py).
    # Capped at an hour (links.MAX_TTL_SECONDS, which mint enforces): links are minted per view.
    photo_url_ttl_seconds: int = Field(default=300, ge=10, le=3600)
    photo_token_secret: str = Field(default="", repr=False)
    photo_token_bind_user_agent: bool = False
    photo_token_one_time: bool = False

    # Cloudflare R2 / any S3 API (boto3).
    r2_bucket: str = ""
    r2_access_key: str = Field(default="", repr=False)
    r2_secret_key: str = Field(default="", repr=False)
    r2_endpoint: str = ""
    r2_region: str = "auto"

    # Cloudflare Images.
    cf_images_account_id: str = ""
    cf_images_account_hash: str = ""
    cf_images_api_token: str = Field(default="", repr=False)
    cf_images_signing_key: str = Field(default="", repr=False)
    cf_images_default_variant: str = "public"
    cf_images_thumbnail_variant: str = "thumbnail"
    # Where the Images API and the delivery host are (the tests point them at a local server).
    cf_images_api_base: str = "https://api.cloudflare.com/client/v4"
    cf_images_delivery_base: str = "https://imagedelivery.net"
    # Each backend call's timeout, and how many times a failed call is tried (storage/*).
    storage_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    storage_max_attempts: int = Field(default=3, ge=1, le=10)

    # The storage janitor (services/media/janitor.py): tombstones per call, and the retry backoff after
    # a failed delete (doubling from the base, capped).
    storage_janitor_batch: int = Field(default=100, ge=1, le=1000)
    storage_janitor_backoff_seconds: int = Field(default=60, ge=1, le=86400)
    storage_janitor_max_backoff_seconds: int = Field(default=6 * 3600, ge=1, le=7 * 86400)

    @field_validator("order_storage_backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        backend = BACKEND_ALIASES.get(value.strip().lower())
        if backend is None:
            raise ValueError(
                "ORDER_STORAGE_BACKEND must be local, r2 (or cloudflare_r2) or cloudflare_images (or cf_images)"
            )
        return backend

    @field_validator("order_photo_allowed_mime", mode="before")
    @classmethod
    def _mime_csv(cls, value: object) -> list[str]:
        types = [item.strip().lower() for item in split_csv(value)]
        unknown = sorted(set(types) - {*DEFAULT_ALLOWED_MIME, "image/gif"})
        if unknown:
            raise ValueError(
                f"ORDER_PHOTO_ALLOWED_MIME: {', '.join(unknown)} cannot be verified from the content "
                f"(choose among {', '.join(DEFAULT_ALLOWED_MIME)}, image/gif)"
            )
        if not types:
            raise ValueError("ORDER_PHOTO_ALLOWED_MIME must name at least one type")
        return types

    @model_validator(mode="after")
    def _one_time_needs_redis(self) -> MediaSettings:
        # One-time links are marked used in Redis; without it they could only be refused (every link
        # fails closed) or served again and again: refuse the setting instead of either surprise.
        if self.photo_token_one_time and not self.redis_url.strip():
            raise ValueError("PHOTO_TOKEN_ONE_TIME=true needs REDIS_URL (used links are marked there)")
        return self

    @property
    def allowed_mime(self) -> frozenset[str]:
        return frozenset(self.order_photo_allowed_mime)

    @property
    def spool_dir(self) -> Path:
        """Where uploads are written while checked, beside the local root (same file system: a rename)."""
        return self.order_upload_root / ".incoming"

    @property
    def photo_token_secrets(self) -> tuple[bytes, ...]:
        """What links.verify takes (current first; links.mint takes the first). Empty when unset."""
        return tuple(dict.fromkeys(item.encode() for item in split_csv(self.photo_token_secret)))

    def secrets_to_check(self) -> dict[str, str]:
        # PHOTO_TOKEN_SECRET is a list (current first, then the ones it replaced): each is checked, named
        # by its position, since a weak old secret still signs links that verify.
        photo = {
            f"PHOTO_TOKEN_SECRET[{position}]": secret
            for position, secret in enumerate(split_csv(self.photo_token_secret) or [""])
        }
        secrets = {**super().secrets_to_check(), **photo}
        if self.order_storage_backend == "cloudflare_images":
            secrets["CF_IMAGES_SIGNING_KEY"] = self.cf_images_signing_key
        return secrets

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        missing = [name for name, value in self.backend_requirements().items() if not value.strip()]
        if missing:
            problems.append(
                f"ORDER_STORAGE_BACKEND={self.order_storage_backend} needs {', '.join(missing)}: "
                "set them or choose another backend"
            )
        return problems

    def backend_requirements(self) -> dict[str, str]:
        """The settings the chosen backend cannot work without, by name."""
        if self.order_storage_backend == "r2":
            return {
                "R2_BUCKET": self.r2_bucket,
                "R2_ACCESS_KEY": self.r2_access_key,
                "R2_SECRET_KEY": self.r2_secret_key,
            }
        if self.order_storage_backend == "cloudflare_images":
            return {
                "CF_IMAGES_ACCOUNT_ID": self.cf_images_account_id,
                "CF_IMAGES_ACCOUNT_HASH": self.cf_images_account_hash,
                "CF_IMAGES_API_TOKEN": self.cf_images_api_token,
                "CF_IMAGES_SIGNING_KEY": self.cf_images_signing_key,
            }
        return {"ORDER_UPLOAD_ROOT": str(self.order_upload_root)}
