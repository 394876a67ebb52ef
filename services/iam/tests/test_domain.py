"""IAM domain logic alone, no database: TOTP steps, password policy, portal tokens, access tokens
and the signed request context."""

from __future__ import annotations

import time
import uuid

import jwt
import pyotp
import pytest
from cryptography.fernet import InvalidToken

from libs.common import context as request_context
from libs.common import tokens
from libs.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.iam import passwords, portal_tokens, totp

SECRET = "test-secret-" + "x" * 60
NOW = 1_800_000_015.0  # 15 s into a 30 s step
STEP = int(NOW // totp.STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).at(step * totp.STEP_SECONDS)


# --- TOTP -----------------------------------------------------------------------------------


@pytest.fixture
def totp_secret() -> str:
    return totp.new_secret()


def test_totp_current_code_matches_its_step(totp_secret: str) -> None:
    assert totp.matching_step(totp_secret, code_at(totp_secret, STEP), 0, now=NOW) == STEP


def test_totp_code_with_surrounding_spaces_is_accepted(totp_secret: str) -> None:
    assert totp.matching_step(totp_secret, f"  {code_at(totp_secret, STEP)} ", 0, now=NOW) == STEP


def test_totp_code_of_previous_and_next_step_accepted_within_window(totp_secret: str) -> None:
    assert totp.matching_step(totp_secret, code_at(totp_secret, STEP - 1), 0, now=NOW) == STEP - 1
    assert totp.matching_step(totp_secret, code_at(totp_secret, STEP + 1), 0, now=NOW) == STEP + 1


def test_totp_code_outside_window_refused(totp_secret: str) -> None:
    for step in (STEP - 2, STEP + 2, STEP - 100):
        code = code_at(totp_secret, step)
        if code in {code_at(totp_secret, s) for s in (STEP - 1, STEP, STEP + 1)}:
            continue  # a one-in-a-million collision with a valid code: not what this test is about
        assert totp.matching_step(totp_secret, code, 0, now=NOW) is None


def test_totp_replayed_step_refused(totp_secret: str) -> None:
    code = code_at(totp_secret, STEP)
    # The step was already accepted: the same code is refused, however soon it comes back.
    assert totp.matching_step(totp_secret, code, STEP, now=NOW) is None
    # An older step's code is refused once a later step was accepted.
    assert totp.matching_step(totp_secret, code_at(totp_secret, STEP - 1), STEP, now=NOW) is None
    # The next step's code is still fine after the current one was used.
    assert totp.matching_step(totp_secret, code_at(totp_secret, STEP + 1), STEP, now=NOW) == STEP + 1


@pytest.mark.parametrize(
    "code", ["", "   ", "12345", "1234567", "abcdef", "12 345", "12345a", "١٢٣٤٥٦", "¹²³⁴⁵⁶", "-12345", None]
)
def test_totp_malformed_codes_refused(totp_secret: str, code: str | None) -> None:
    assert totp.matching_step(totp_secret, code, 0, now=NOW) is None  # type: ignore[arg-type]


def test_totp_code_of_another_secret_refused(totp_secret: str) -> None:
    other = totp.new_secret()
    code = code_at(other, STEP)
    if code in {code_at(totp_secret, s) for s in (STEP - 1, STEP, STEP + 1)}:
        pytest.skip("random collision between two secrets")
    assert totp.matching_step(totp_secret, code, 0, now=NOW) is None


def test_totp_secret_encryption_round_trip_and_key_binding(totp_secret: str) -> None:
    encrypted = totp.encrypt_secret(totp_secret, SECRET)
    assert totp_secret not in encrypted
    assert totp.open_secret(encrypted, [SECRET]).plain == totp_secret
    with pytest.raises(InvalidToken):
        totp.open_secret(encrypted, [SECRET + "-other"])


def test_totp_provisioning_uri(totp_secret: str) -> None:
    uri = totp.provisioning_uri(totp_secret, "owner@example.com", "CleanWithSnapshot")
    assert uri.startswith("otpauth://totp/")
    assert f"secret={totp_secret}" in uri
    assert "issuer=CleanWithSnapshot" in uri


# --- password policy ------------------------------------------------------------------------


def _violation_field(error: InvalidArgument) -> str:
    assert error.violations, "an invalid argument must name the field"
    return error.violations[0].field


@pytest.mark.parametrize("password", ["", "short", "elevenchars"])
def test_password_shorter_than_12_refused(password: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        passwords.check_policy(password)
    assert _violation_field(raised.value) == "password"


def test_password_of_12_characters_accepted() -> None:
    passwords.check_policy("abcdefghijkl")
    passwords.check_policy("x" * passwords.MAX_LENGTH)


def test_password_too_long_refused() -> None:
    with pytest.raises(InvalidArgument):
        passwords.check_policy("x" * (passwords.MAX_LENGTH + 1))


@pytest.mark.parametrize(
    "password", ["dev-auth-secret", "DEV-INTERNAL-SECRET", "  change-me   ", "dev-metrics-token"]
)
def test_placeholder_passwords_refused_even_when_long_enough(password: str) -> None:
    assert len(password) >= passwords.MIN_LENGTH
    with pytest.raises(InvalidArgument) as raised:
        passwords.check_policy(password, "new_password")
    assert _violation_field(raised.value) == "new_password"
    assert "placeholder" in raised.value.detail


def test_temporary_password_meets_policy_and_is_random() -> None:
    generated = {passwords.temporary_password() for _ in range(20)}
    assert len(generated) == 20
    for password in generated:
        passwords.check_policy(password)


async def test_password_hash_and_verify() -> None:
    hashed = await passwords.hash_password("Correct-horse-battery")
    assert "Correct-horse-battery" not in hashed
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify_password(hashed, "Correct-horse-battery")
    assert not await passwords.verify_password(hashed, "Wrong-horse-battery")
    assert not await passwords.verify_password(None, "Correct-horse-battery")
    assert not await passwords.verify_password("not-a-hash", "Correct-horse-battery")


# --- portal tokens --------------------------------------------------------------------------


def test_client_portal_token_round_trip() -> None:
    org = str(uuid.uuid4())
    token, expires = portal_tokens.issue(
        portal_tokens.CLIENT, SECRET, org_id=org, subject="client-7", email="c@example.com", ttl_minutes=30
    )
    claims = portal_tokens.verify(portal_tokens.CLIENT, SECRET, token)
    assert claims.org_id == org
    assert claims.subject == "client-7"
    assert claims.email == "c@example.com"
    assert claims.expires_at == expires
    assert abs(expires - (time.time() + 30 * 60)) < 5


def test_portal_token_expired_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    issued_at = time.time() - 3 * 3600
    monkeypatch.setattr(portal_tokens.time, "time", lambda: issued_at)
    token, _ = portal_tokens.issue(
        portal_tokens.CLIENT, SECRET, org_id=str(uuid.uuid4()), subject="s", email="", ttl_minutes=60
    )
    monkeypatch.undo()
    with pytest.raises(Unauthenticated) as raised:
        portal_tokens.verify(portal_tokens.CLIENT, SECRET, token)
    assert raised.value.code == "invalid_portal_token"


def test_portal_token_of_other_kind_refused() -> None:
    token, _ = portal_tokens.issue(
        portal_tokens.WORKER, SECRET, org_id=str(uuid.uuid4()), subject="w", email="", ttl_minutes=5
    )
    assert portal_tokens.verify(portal_tokens.WORKER, SECRET, token).subject == "w"
    # Same secret on purpose: only the type claim tells the two apart here.
    with pytest.raises(Unauthenticated):
        portal_tokens.verify(portal_tokens.CLIENT, SECRET, token)


def test_portal_token_tampered_or_wrong_secret_refused() -> None:
    org = str(uuid.uuid4())
    token, _ = portal_tokens.issue(
        portal_tokens.CLIENT, SECRET, org_id=org, subject="s", email="", ttl_minutes=5
    )
    header, payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(org.encode(), str(uuid.uuid4()).encode())
    ).decode()
    for bad in (
        f"{header}.{forged_payload}.{signature}",
        f"{header}.{payload}.{signature[:-4]}AAAA",
        token + "x",
        "",
        "not-a-token",
    ):
        with pytest.raises(Unauthenticated):
            portal_tokens.verify(portal_tokens.CLIENT, SECRET, bad)
    with pytest.raises(Unauthenticated):
        portal_tokens.verify(portal_tokens.CLIENT, SECRET + "-other", token)


def test_portal_token_unsigned_alg_none_refused() -> None:
    payload = {
        "typ": portal_tokens.CLIENT,
        "org": str(uuid.uuid4()),
        "sub": "s",
        "exp": int(time.time()) + 60,
    }
    unsigned = jwt.encode(payload, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        portal_tokens.verify(portal_tokens.CLIENT, SECRET, unsigned)


def test_portal_token_with_non_uuid_org_refused() -> None:
    token, _ = portal_tokens.issue(
        portal_tokens.CLIENT, SECRET, org_id="not-an-org", subject="s", email="", ttl_minutes=5
    )
    with pytest.raises(Unauthenticated):
        portal_tokens.verify(portal_tokens.CLIENT, SECRET, token)


@pytest.mark.parametrize("ttl", [0, -1, 60 * 24 * 30 + 1])
def test_portal_token_ttl_bounds(ttl: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        portal_tokens.issue(
            portal_tokens.CLIENT, SECRET, org_id=str(uuid.uuid4()), subject="s", email="", ttl_minutes=ttl
        )
    assert _violation_field(raised.value) == "ttl_minutes"


# --- access tokens (libs/common/tokens.py) --------------------------------------------------


def _claims(expires_in: int = 600) -> tokens.AccessClaims:
    return tokens.AccessClaims(
        user_id=str(uuid.uuid4()),
        org_id=str(uuid.uuid4()),
        role="ADMIN",
        session_id=str(uuid.uuid4()),
        mfa_verified=True,
        expires_at=int(time.time()) + expires_in,
    )


def test_access_token_round_trip() -> None:
    claims = _claims()
    assert tokens.decode_access(tokens.encode_access(claims, SECRET), SECRET) == claims


def test_access_token_expired_refused() -> None:
    token = tokens.encode_access(_claims(expires_in=-60), SECRET)
    with pytest.raises(jwt.ExpiredSignatureError):
        tokens.decode_access(token, SECRET)


def test_access_token_tampered_or_wrong_secret_refused() -> None:
    token = tokens.encode_access(_claims(), SECRET)
    header, payload, signature = token.split(".")
    decoded = jwt.utils.base64url_decode(payload).replace(b'"ADMIN"', b'"OWNER"')
    tampered = f"{header}.{jwt.utils.base64url_encode(decoded).decode()}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.decode_access(tampered, SECRET)
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.decode_access(token, SECRET + "-other")


def _raw_access_payload(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "iss": tokens.ISSUER,
        "typ": "access",
        "sub": str(uuid.uuid4()),
        "org": str(uuid.uuid4()),
        "role": "OWNER",
        "sid": str(uuid.uuid4()),
        "mfa": False,
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


@pytest.mark.parametrize(
    "overrides",
    [
        {"typ": "refresh"},
        {"typ": None},
        {"typ": "client_portal"},
        {"iss": "someone-else"},
        {"iss": None},
        {"sid": None},
        {"org": None},
        {"exp": None},
    ],
    ids=[
        "typ-refresh",
        "typ-missing",
        "typ-portal",
        "issuer-other",
        "issuer-missing",
        "no-sid",
        "no-org",
        "no-exp",
    ],
)
def test_access_token_wrong_type_or_missing_claims_refused(overrides: dict[str, object]) -> None:
    token = jwt.encode(_raw_access_payload(**overrides), SECRET, algorithm="HS256")
    with pytest.raises(jwt.InvalidTokenError):
        tokens.decode_access(token, SECRET)


def test_access_token_other_algorithms_refused() -> None:
    unsigned = jwt.encode(_raw_access_payload(), None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(jwt.InvalidTokenError):
        tokens.decode_access(unsigned, SECRET)
    hs512 = jwt.encode(_raw_access_payload(), SECRET, algorithm="HS512")
    with pytest.raises(jwt.InvalidTokenError):
        tokens.decode_access(hs512, SECRET)


def test_portal_token_is_not_an_access_token() -> None:
    token, _ = portal_tokens.issue(
        portal_tokens.CLIENT, SECRET, org_id=str(uuid.uuid4()), subject="s", email="", ttl_minutes=5
    )
    with pytest.raises(jwt.InvalidTokenError):
        tokens.decode_access(token, SECRET)


# --- request context (libs/common/context.py) ----------------------------------------------


def _ctx(**fields: object) -> request_context.RequestContext:
    defaults: dict[str, object] = {
        "org_id": str(uuid.uuid4()),
        "principal_id": str(uuid.uuid4()),
        "role": "ADMIN",
        "auth_method": request_context.AuthMethod.Value("AUTH_METHOD_JWT"),
        "request_id": "req-1",
    }
    defaults.update(fields)
    return request_context.RequestContext(**defaults)  # type: ignore[arg-type]


# Signing and verifying calls: libs/common/tests/test_call_signing.py and tests/test_internal_calls.py.


def test_current_context_and_role_checks() -> None:
    with pytest.raises(Unauthenticated):
        request_context.current()
    token = request_context.set_current(_ctx(role="DISPATCHER"))
    try:
        assert request_context.require_role("OWNER", "DISPATCHER").role == "DISPATCHER"
        with pytest.raises(PermissionDenied):
            request_context.require_role("OWNER", "ADMIN")
        assert isinstance(request_context.current_org_id(), uuid.UUID)
    finally:
        request_context.reset_current(token)
    token = request_context.set_current(_ctx(org_id="", principal_id=""))
    try:
        with pytest.raises(PermissionDenied):
            request_context.current_org_id()
        with pytest.raises(Unauthenticated):
            request_context.require_role("ADMIN")
    finally:
        request_context.reset_current(token)
