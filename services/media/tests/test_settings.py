"""MediaSettings: backend names and their aliases, the MIME allowlist, and production refusing a
backend whose settings are missing (with a sentence naming them)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.media.settings import MediaSettings
from tools.processes import DEV_KEYRING

PROD: dict[str, Any] = {
    "app_env": "prod",
    "metrics_token": secrets.token_urlsafe(24),
    "photo_token_secret": secrets.token_urlsafe(32),
    "_env_file": None,
    **{k.lower(): v for k, v in DEV_KEYRING.env_for("media").items()},
}


@pytest.mark.parametrize(
    ("given", "backend"),
    [
        ("local", "local"),
        ("r2", "r2"),
        ("cloudflare_r2", "r2"),
        ("CF_IMAGES", "cloudflare_images"),
        ("cloudflare_images", "cloudflare_images"),
    ],
)
def test_backend_aliases_are_normalised(given: str, backend: str) -> None:
    assert (
        MediaSettings(_env_file=None, app_env="test", order_storage_backend=given).order_storage_backend
        == backend
    )


def test_an_unknown_backend_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match="ORDER_STORAGE_BACKEND must be local, r2"):
        MediaSettings(_env_file=None, app_env="test", order_storage_backend="ftp")


def test_defaults_and_the_mime_allowlist() -> None:
    settings = MediaSettings(_env_file=None, app_env="test")
    assert settings.order_photo_max_bytes == 10 * 1024 * 1024
    assert settings.allowed_mime == frozenset({"image/jpeg", "image/png", "image/webp"})
    assert settings.spool_dir == Path("tmp") / ".incoming"
    narrowed = MediaSettings(_env_file=None, app_env="test", order_photo_allowed_mime="image/png, IMAGE/JPEG")
    assert narrowed.allowed_mime == frozenset({"image/png", "image/jpeg"})
    with pytest.raises(ValidationError, match="cannot be verified from the content"):
        MediaSettings(_env_file=None, app_env="test", order_photo_allowed_mime="image/jpeg,text/html")


def test_prod_refuses_a_backend_whose_settings_are_missing() -> None:
    assert MediaSettings(**PROD).order_storage_backend == "local"
    with pytest.raises(
        ValidationError, match="ORDER_STORAGE_BACKEND=r2 needs R2_BUCKET, R2_ACCESS_KEY, R2_SECRET_KEY"
    ):
        MediaSettings(**PROD, order_storage_backend="cloudflare_r2")
    assert (
        MediaSettings(
            **PROD, order_storage_backend="r2", r2_bucket="photos", r2_access_key="k", r2_secret_key="s"
        ).r2_bucket
        == "photos"
    )
    with pytest.raises(
        ValidationError, match="ORDER_STORAGE_BACKEND=cloudflare_images needs CF_IMAGES_ACCOUNT_ID"
    ):
        MediaSettings(**PROD, order_storage_backend="cf_images")
    with pytest.raises(ValidationError, match=r"PHOTO_TOKEN_SECRET(\[0\])? is a placeholder"):
        MediaSettings(**{**PROD, "photo_token_secret": "change-me"})
    # Outside prod nothing is refused at start-up (build_storage still names what is missing).
    assert MediaSettings(_env_file=None, app_env="dev", order_storage_backend="r2").r2_bucket == ""
