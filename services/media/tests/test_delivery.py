"""Consent and delivery rules that need no database (the routes are tested through the gateway in
gateway/tests/test_photo_links.py): what the settings refuse, how `delivery.mint` applies
PHOTO_URL_TTL_SECONDS, PHOTO_TOKEN_BIND_USER_AGENT and PHOTO_TOKEN_ONE_TIME, and what the consent
refusal tells the client."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from libs.common.errors import FailedPrecondition, NotFound, Unavailable
from services.media import consent, delivery, links
from services.media.settings import MediaSettings

SECRET = "delivery-test-secret-0123456789abcdefghij"
UA = "Mozilla/5.0 (test) Firefox/140.0"


def settings(**values: object) -> MediaSettings:
    return MediaSettings(app_env="test", photo_token_secret=SECRET, **values)  # type: ignore[arg-type]


def test_one_time_links_are_refused_without_redis() -> None:
    with pytest.raises(ValidationError, match="PHOTO_TOKEN_ONE_TIME=true needs REDIS_URL"):
        settings(photo_token_one_time=True, redis_url="")
    assert settings(photo_token_one_time=True, redis_url="redis://127.0.0.1:6379/15").photo_token_one_time


def test_mint_follows_the_settings() -> None:
    org, photo = uuid.uuid4(), uuid.uuid4()
    plain = delivery.mint(settings(photo_url_ttl_seconds=60), org, photo, UA)
    claims = links.verify((SECRET.encode(),), plain.token, user_agent="anything else")
    assert (claims.org_id, claims.photo_id, claims.one_time, claims.ua_bound) == (
        str(org),
        str(photo),
        False,
        False,
    )
    assert abs((plain.expires_at - datetime.now(UTC)).total_seconds() - 60) < 2
    assert claims.expires_at == int(plain.expires_at.timestamp())

    strict = settings(
        photo_token_bind_user_agent=True, photo_token_one_time=True, redis_url="redis://127.0.0.1:6379/15"
    )
    bound = delivery.mint(strict, org, photo, UA)
    claims = links.verify((SECRET.encode(),), bound.token, user_agent=UA)
    assert (claims.one_time, claims.ua_bound) == (True, True)
    with pytest.raises(NotFound) as other_browser:
        links.verify((SECRET.encode(),), bound.token, user_agent="curl/8.0")
    assert other_browser.value.code == links.INVALID
    with pytest.raises(NotFound) as later:
        links.verify((SECRET.encode(),), bound.token, user_agent=UA, now=int(time.time()) + 400)
    assert later.value.code == links.EXPIRED


def test_without_a_secret_no_link_is_minted() -> None:
    with pytest.raises(Unavailable) as refused:
        delivery.mint(MediaSettings(app_env="test", photo_token_secret=""), uuid.uuid4(), uuid.uuid4(), UA)
    assert refused.value.code == "photo_links_unconfigured"


def test_the_consent_refusal_says_why() -> None:
    booking = uuid.uuid4()
    now = datetime.now(UTC)
    never = consent.Consent(booking, False, False, "", None, None, "")
    withdrawn = consent.Consent(booking, True, False, "c@example.com", now, now, consent.CLIENT_PORTAL)
    active = consent.Consent(booking, True, True, "c@example.com", now, None, consent.CLIENT_PORTAL)
    consent.require_active(active)
    for state, reason in ((never, "has not given photo consent"), (withdrawn, "was withdrawn")):
        with pytest.raises(FailedPrecondition) as refused:
            consent.require_active(state)
        assert refused.value.code == consent.REQUIRED and reason in refused.value.detail
