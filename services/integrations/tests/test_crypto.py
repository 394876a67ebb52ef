"""Token sealing (crypto.py) and the token key settings, alone."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from pydantic import ValidationError

from services.integrations.crypto import ACCESS, REFRESH, TokenBox, TokenUnreadable
from services.integrations.settings import DEV_TOKEN_KEY, IntegrationsSettings


def key() -> bytes:
    return os.urandom(32)


def test_a_sealed_token_opens_for_its_org_provider_and_kind_only() -> None:
    box = TokenBox((key(),))
    org, other = uuid.uuid4(), uuid.uuid4()
    sealed = box.seal("ya29.secret-access", org, "google_calendar", ACCESS)
    assert b"ya29" not in sealed
    assert box.open(sealed, org, "google_calendar", ACCESS) == "ya29.secret-access"
    # The same bytes copied into another org's row, another provider's, or the other token's column.
    for org_id, provider, kind in (
        (other, "google_calendar", ACCESS),
        (org, "quickbooks", ACCESS),
        (org, "google_calendar", REFRESH),
    ):
        with pytest.raises(TokenUnreadable):
            box.open(sealed, org_id, provider, kind)


def test_each_seal_uses_a_fresh_nonce_and_a_tampered_value_does_not_open() -> None:
    box = TokenBox((key(),))
    org = uuid.uuid4()
    first, second = (box.seal("same", org, "quickbooks", REFRESH) for _ in range(2))
    assert first != second
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(TokenUnreadable):
        box.open(tampered, org, "quickbooks", REFRESH)
    with pytest.raises(TokenUnreadable):
        box.open(first[:10], org, "quickbooks", REFRESH)


def test_an_old_key_still_opens_and_only_the_current_key_seals() -> None:
    old, new = key(), key()
    org = uuid.uuid4()
    sealed_before = TokenBox((old,)).seal("rt-before", org, "quickbooks", REFRESH)
    rotated = TokenBox((new, old))
    assert rotated.open(sealed_before, org, "quickbooks", REFRESH) == "rt-before"
    sealed_after = rotated.seal("rt-after", org, "quickbooks", REFRESH)
    assert TokenBox((new,)).open(sealed_after, org, "quickbooks", REFRESH) == "rt-after"
    with pytest.raises(TokenUnreadable):
        TokenBox((old,)).open(sealed_after, org, "quickbooks", REFRESH)
    # The old key removed too early: the value no longer opens (a clear error, no garbage).
    with pytest.raises(TokenUnreadable):
        TokenBox((new,)).open(sealed_before, org, "quickbooks", REFRESH)


def test_settings_read_the_keys_and_refuse_bad_ones() -> None:
    current, old = (base64.b64encode(key()).decode() for _ in range(2))
    settings = IntegrationsSettings(
        app_env="test", integrations_token_key=current, integrations_token_old_keys=f"{old}"
    )
    assert settings.token_keys == (base64.b64decode(current), base64.b64decode(old))
    urlsafe = base64.urlsafe_b64encode(key()).decode().rstrip("=")
    assert len(IntegrationsSettings(app_env="test", integrations_token_key=urlsafe).token_keys[0]) == 32
    with pytest.raises(ValidationError, match="INTEGRATIONS_TOKEN_KEY must be base64 of 32 bytes"):
        IntegrationsSettings(app_env="test", integrations_token_key=base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError, match=r"INTEGRATIONS_TOKEN_OLD_KEYS\[1\] is not base64"):
        IntegrationsSettings(
            app_env="test", integrations_token_key=current, integrations_token_old_keys="!!!"
        )


def test_a_configured_provider_needs_a_token_key_and_prod_refuses_the_dev_one() -> None:
    google = {
        "google_oauth_client_id": "id",
        "google_oauth_client_secret": "a-real-looking-secret",
        "google_oauth_redirect_uri": "https://console.example/admin/settings/integrations",
    }
    with pytest.raises(ValidationError, match="INTEGRATIONS_TOKEN_KEY is required"):
        IntegrationsSettings(app_env="test", **google)
    settings = IntegrationsSettings(app_env="test", integrations_token_key=DEV_TOKEN_KEY, **google)
    assert settings.configured("google_calendar") and not settings.configured("quickbooks")
    assert any("dev placeholder" in problem for problem in settings.prod_problems())
