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
