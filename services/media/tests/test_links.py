"""Signed photo links (services/media/links.py): signing, expiry, User-Agent binding, key rotation,
and one-time use against the real Redis (the root conftest's `redis_url`, database 15)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from libs.common.errors import NotFound, Unavailable
from services.media import links

SECRET = b"photo-link-test-secret-0123456789abcdef"
OLD_SECRET = b"photo-link-old-secret-fedcba9876543210"
ORG = str(uuid.uuid4())
PHOTO = str(uuid.uuid4())
NOW = 1_800_000_000
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"


def mint(**overrides: object) -> str:
    args: dict[str, object] = {"org_id": ORG, "photo_id": PHOTO, "ttl_seconds": 300, "now": NOW}
    args.update(overrides)
    secret = args.pop("secret", SECRET)
    return links.mint(secret, **args)  # type: ignore[arg-type]


def refused(
    token: str, *, secrets_: list[bytes] | None = None, user_agent: str | None = None, now: int = NOW
) -> str:
    with pytest.raises(NotFound) as raised:
        links.verify(secrets_ or [SECRET], token, user_agent=user_agent, now=now)
    return raised.value.code


def payload_of(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))  # type: ignore[no-any-return]


def encode(payload: dict[str, object]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- signing ----------------------------------------------------------------------------------------


def test_a_minted_token_verifies_to_its_claims():
    token = mint()
    claims = links.verify([SECRET], token, user_agent=None, now=NOW + 10)
    assert (claims.org_id, claims.photo_id) == (ORG, PHOTO)
    assert claims.expires_at == NOW + 300
    assert not claims.one_time and not claims.ua_bound and claims.key_index == 0


def test_the_token_is_url_safe_versioned_and_short():
    token = mint(user_agent=UA, one_time=True)
    assert token.startswith("v1.")
    assert len(token) < 300
    assert all(c.isalnum() or c in "-_." for c in token)


def test_every_mint_is_a_new_token_with_its_own_nonce():
    first, second = mint(), mint()
    assert first != second
    assert payload_of(first)["n"] != payload_of(second)["n"]


def test_ids_are_normalised_and_must_be_uuids():
    claims = links.verify([SECRET], mint(org_id=ORG.upper()), user_agent=None, now=NOW)
    assert claims.org_id == ORG
    with pytest.raises(ValueError, match="photo_id"):
        mint(photo_id="../etc/passwd")


@pytest.mark.parametrize("ttl", [0, 9, 3601, -5, True])
def test_ttl_outside_its_bounds_is_a_programming_error(ttl):
    with pytest.raises(ValueError, match="ttl_seconds"):
        mint(ttl_seconds=ttl)


def test_the_payload_never_holds_the_user_agent_itself():
    token = mint(user_agent=UA)
    assert "Mozilla" not in json.dumps(payload_of(token))
    assert "Firefox" not in token


def test_a_token_signed_with_another_secret_is_invalid():
    assert refused(mint(secret=b"someone-else-entirely-0123456789abc")) == links.INVALID


def test_a_tampered_payload_is_invalid():
    token = mint()
    version, _, signature = token.split(".")
    forged = {**payload_of(token), "p": str(uuid.uuid4())}
    assert refused(f"{version}.{encode(forged)}.{signature}") == links.INVALID
    # Extending the expiry is tampering too.
    longer = {**payload_of(token), "e": NOW + 86400}
    assert refused(f"{version}.{encode(longer)}.{signature}") == links.INVALID


def test_a_tampered_signature_is_invalid():
    token = mint()
    head, signature = token.rsplit(".", 1)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert refused(f"{head}.{flipped}") == links.INVALID
    assert refused(f"{head}.{signature[:-1]}") == links.INVALID


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1..",
        "v1.abc",
        "v2.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.extra",
        "v1.e3+/.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.%00.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "../../etc/passwd",
        "v1.é.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_tokens_are_invalid_not_errors(token):
    assert refused(token) == links.INVALID


def test_a_token_over_one_kilobyte_is_refused_before_any_work():
    head = mint()
    assert refused(head + "A" * links.MAX_TOKEN_CHARS) == links.INVALID
    assert refused("v1." + "A" * 2000 + ".sig") == links.INVALID


def _signed(payload: dict[str, object], secret: bytes = SECRET) -> str:
    """A token signed with the real key but holding a payload mint would never write: how verify
    behaves if a secret leaked or a future version minted differently."""
    key = hmac.new(secret, b"cws media photo link v1", hashlib.sha256).digest()
    signed = f"v1.{encode(payload)}"
    sig = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "change",
    [
        {"o": "not-a-uuid"},
        {"p": 12},
        {"e": "1800000300"},
        {"e": True},
        {"n": "short"},
        {"t": "yes"},
        {"u": 5},
    ],
)
def test_a_signed_but_malformed_payload_is_invalid_not_a_crash(change):
    good = payload_of(mint())
    assert refused(_signed({**good, **change})) == links.INVALID
    assert refused(_signed([1, 2])) == links.INVALID  # type: ignore[arg-type]


# --- expiry -----------------------------------------------------------------------------------------


def test_a_token_is_good_until_its_expiry_second():
    token = mint(ttl_seconds=60)
    assert links.verify([SECRET], token, user_agent=None, now=NOW + 59).photo_id == PHOTO
    assert refused(token, now=NOW + 60) == links.EXPIRED
    assert refused(token, now=NOW + 10_000) == links.EXPIRED


def test_an_expired_forgery_is_invalid_not_expired():
    # Expiry is told only to holders of a genuine link: the signature is checked first.
    token = mint(ttl_seconds=60, secret=b"someone-else-entirely-0123456789abc")
    assert refused(token, now=NOW + 120) == links.INVALID


# --- User-Agent binding -----------------------------------------------------------------------------


def test_a_bound_token_opens_in_the_same_browser_only():
    token = mint(user_agent=UA)
    claims = links.verify([SECRET], token, user_agent=UA, now=NOW)
    assert claims.ua_bound
    assert refused(token, user_agent=UA + " evil") == links.INVALID
    assert refused(token, user_agent="curl/8.5.0") == links.INVALID
    assert refused(token, user_agent=None) == links.INVALID


def test_a_wrong_browser_is_not_told_the_link_expired():
    token = mint(user_agent=UA, ttl_seconds=60)
    assert refused(token, user_agent="curl/8.5.0", now=NOW + 120) == links.INVALID


def test_a_token_bound_to_no_user_agent_opens_without_one():
    token = mint(user_agent="")
    assert links.verify([SECRET], token, user_agent=None, now=NOW).ua_bound
    assert refused(token, user_agent=UA) == links.INVALID


def test_an_unbound_token_opens_from_any_user_agent():
    token = mint()
    for agent in (UA, "curl/8.5.0", "", None):
        assert not links.verify([SECRET], token, user_agent=agent, now=NOW).ua_bound


def test_stripping_the_binding_breaks_the_signature():
    token = mint(user_agent=UA)
    version, _, signature = token.split(".")
    unbound = {k: v for k, v in payload_of(token).items() if k != "u"}
    assert refused(f"{version}.{encode(unbound)}.{signature}", user_agent="curl/8.5.0") == links.INVALID


# --- rotation ---------------------------------------------------------------------------------------


def test_after_rotation_old_tokens_verify_and_new_ones_use_the_new_secret():
    before = mint(secret=OLD_SECRET, user_agent=UA)
    rotated = [SECRET, OLD_SECRET]
    old_claims = links.verify(rotated, before, user_agent=UA, now=NOW)
    assert old_claims.key_index == 1
    after = links.mint(rotated[0], org_id=ORG, photo_id=PHOTO, ttl_seconds=300, now=NOW)
    assert links.verify(rotated, after, user_agent=None, now=NOW).key_index == 0
    # Once the old secret is dropped its tokens stop working; the new ones never needed it.
    assert refused(before, secrets_=[SECRET], user_agent=UA) == links.INVALID
    assert links.verify([SECRET], after, user_agent=None, now=NOW).photo_id == PHOTO
    assert refused(after, secrets_=[OLD_SECRET]) == links.INVALID


def test_no_secret_or_an_empty_one_is_a_configuration_error():
    with pytest.raises(ValueError):
        links.verify([], mint(), user_agent=None, now=NOW)
    with pytest.raises(ValueError):
        links.mint(b"", org_id=ORG, photo_id=PHOTO, ttl_seconds=300)


# --- one-time use, real Redis -----------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    if not redis_url:
        pytest.skip("no Redis at REDIS_URL or 127.0.0.1:6379")
    client = links.store_client(redis_url, timeout_seconds=2)
    yield client
    await client.aclose()


def one_time_claims(ttl: int = 300) -> links.PhotoClaims:
    token = links.mint(SECRET, org_id=ORG, photo_id=PHOTO, ttl_seconds=ttl, one_time=True)
    return links.verify([SECRET], token, user_agent=None)


async def test_a_one_time_token_opens_once(redis):
    prefix = f"test-photo-link-{secrets.token_hex(4)}:"
    claims = one_time_claims()
    assert claims.one_time
    assert await links.consume_once(redis, claims, key_prefix=prefix) is True
    assert await links.consume_once(redis, claims, key_prefix=prefix) is False
    with pytest.raises(NotFound) as raised:
        await links.redeem(redis, claims, key_prefix=prefix)
    assert raised.value.code == links.USED
    # The mark lives as long as the token (plus the clock-skew margin), then Redis forgets it.
    ttl = await redis.ttl(f"{prefix}{claims.nonce}")
    assert 300 < ttl <= 300 + links.CLOCK_SKEW_SECONDS
    await redis.delete(f"{prefix}{claims.nonce}")


async def test_the_default_key_is_photo_link_and_the_nonce(redis):
    claims = one_time_claims()
    assert await links.consume_once(redis, claims) is True
    assert await redis.exists(f"photo-link:{claims.nonce}") == 1
    await redis.delete(f"photo-link:{claims.nonce}")


async def test_twenty_concurrent_openings_let_exactly_one_through(redis):
    prefix = f"test-photo-link-{secrets.token_hex(4)}:"
    claims = one_time_claims()
    results = await asyncio.gather(*(links.consume_once(redis, claims, key_prefix=prefix) for _ in range(20)))
    assert results.count(True) == 1 and results.count(False) == 19
    await redis.delete(f"{prefix}{claims.nonce}")


async def test_twenty_clients_racing_let_exactly_one_through(redis_url):
    # Separate connections, as separate media replicas would have.
    if not redis_url:
        pytest.skip("no Redis at REDIS_URL or 127.0.0.1:6379")
    prefix = f"test-photo-link-{secrets.token_hex(4)}:"
    claims = one_time_claims()
    clients = [Redis.from_url(redis_url, socket_timeout=2) for _ in range(20)]
    try:
        results = await asyncio.gather(*(links.consume_once(c, claims, key_prefix=prefix) for c in clients))
        assert results.count(True) == 1
    finally:
        await clients[0].delete(f"{prefix}{claims.nonce}")
        for client in clients:
            await client.aclose()


async def test_different_one_time_tokens_do_not_block_each_other(redis):
    prefix = f"test-photo-link-{secrets.token_hex(4)}:"
    first, second = one_time_claims(), one_time_claims()
    assert await links.consume_once(redis, first, key_prefix=prefix)
    assert await links.consume_once(redis, second, key_prefix=prefix)
    await redis.delete(f"{prefix}{first.nonce}", f"{prefix}{second.nonce}")


async def test_a_reusable_token_never_touches_redis():
    # A client on a closed port: any call would fail, so True proves nothing was asked.
    client = Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    claims = links.verify(
        [SECRET], links.mint(SECRET, org_id=ORG, photo_id=PHOTO, ttl_seconds=300), user_agent=None
    )
    assert await links.consume_once(client, claims) is True
    await client.aclose()


async def test_a_one_time_token_past_its_expiry_is_expired_not_marked(redis):
    claims = one_time_claims(ttl=60)
    with pytest.raises(NotFound) as raised:
        await links.consume_once(redis, claims, now=claims.expires_at)
    assert raised.value.code == links.EXPIRED
    assert await redis.exists(f"photo-link:{claims.nonce}") == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_unreachable_fails_closed():
    client = links.store_client(f"redis://127.0.0.1:{_closed_port()}/15")
    claims = one_time_claims()
    try:
        for _ in range(2):  # and again: never served, however often it is retried
            with pytest.raises(Unavailable) as raised:
                await links.consume_once(client, claims)
            assert raised.value.code == links.STORE_UNAVAILABLE
            assert raised.value.retry_after_seconds
        with pytest.raises(Unavailable):
            await links.redeem(client, claims)
    finally:
        await client.aclose()


async def test_a_hung_redis_is_refused_quickly_not_waited_for():
    # A listener that accepts and never answers, as a wedged Redis or a black-holed network would.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = links.store_client(f"redis://127.0.0.1:{port}/15", timeout_seconds=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(Unavailable) as raised:
            await links.consume_once(client, one_time_claims())
        assert raised.value.code == links.STORE_UNAVAILABLE
        assert loop.time() - started < 2
    finally:
        await client.aclose()
        server.close()
