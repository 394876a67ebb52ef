"""The sealed session cookie: what it opens, and what it refuses."""

from __future__ import annotations

import time

from web.session import SessionCodec


def test_a_sealed_session_opens_with_its_key_only() -> None:
    codec = SessionCodec("a-secret-of-the-web-process-0123456789", ttl_seconds=60)
    sealed = codec.seal({"staff": {"access_token": "t"}, "csrf": "c" * 32})
    assert codec.open(sealed) == {"staff": {"access_token": "t"}, "csrf": "c" * 32}
    assert "access_token" not in sealed  # sealed, not merely signed
    assert SessionCodec("another-secret-of-another-deployment-0", ttl_seconds=60).open(sealed) is None


def test_tampered_malformed_or_old_values_open_as_nothing(monkeypatch) -> None:
    codec = SessionCodec("a-secret-of-the-web-process-0123456789", ttl_seconds=60)
    sealed = codec.seal({"csrf": "x" * 32})
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for value in (flipped, "", "not base64 !!", sealed[:10]):
        assert codec.open(value) is None
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert codec.open(sealed) is None  # older than the session's lifetime


async def test_a_staff_sign_in_ends_after_the_session_ttl_however_often_the_cookie_was_resealed() -> None:
    import httpx

    from web.app import create_app
    from web.session import COOKIE_NAME
    from web.settings import WebSettings

    settings = WebSettings(app_env="test", web_session_ttl_minutes=5)
    codec = SessionCodec(settings.web_session_secret, settings.web_session_ttl_minutes * 60)
    staff = {
        "access_token": "a",
        "refresh_token": "r",
        "expires_at": time.time() + 600,
        "email": "o@example.com",
    }
    # The password page asks the gateway nothing: the app runs in process, without its lifespan.
    app = create_app(settings)

    async def page_with(signed_in_ago: float) -> httpx.Response:
        # Sealed just now (a refresh re-seals the cookie), whenever the person signed in.
        cookie = codec.seal({"staff": {**staff, "since": time.time() - signed_in_ago}})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", cookies={COOKIE_NAME: cookie}
        ) as browser:
            return await browser.get("/console/password")

    late = await page_with(360)
    assert late.status_code == 303 and late.headers["location"].startswith("/console/sign-in")
    assert (await page_with(60)).status_code == 200
