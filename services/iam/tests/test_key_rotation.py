"""Rotating AUTH_SECRET_KEY, domain logic alone: what the current key or an earlier one
(AUTH_SECRET_KEY_PREVIOUS) signed or sealed still verifies and opens, new values are signed and sealed
under the current key only, and a key no longer configured opens nothing. The processes are tested
in gateway/tests/test_key_rotation.py."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.fernet import InvalidToken

from libs.common import tokens
from libs.common.errors import Unauthenticated
from services.iam import signups, temp_passwords, totp
from services.iam.sealing import Sealer
from services.iam.settings import IamSettings

OLD = "old-auth-secret-" + "o" * 40
NEW = "new-auth-secret-" + "n" * 40
LOST = "lost-auth-secret-" + "l" * 40


def iam_settings(current: str, previous: str = "") -> IamSettings:
    return IamSettings(_env_file=None, auth_secret_key=current, auth_secret_key_previous=previous)  # type: ignore[call-arg]


# --- the key list -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        ("", (NEW,)),
        (OLD, (NEW, OLD)),
        (f" {OLD} , {LOST} ,", (NEW, OLD, LOST)),
        (f'["{OLD}", "{LOST}"]', (NEW, OLD, LOST)),
        (f"{NEW},{OLD},{OLD}", (NEW, OLD)),
    ],
    ids=["none", "one", "csv", "json", "repeats"],
)
def test_the_current_key_comes_first_then_each_earlier_one_once(
    previous: str, expected: tuple[str, ...]
) -> None:
    assert iam_settings(NEW, previous).auth_secret_keys == expected


def test_earlier_keys_are_never_shown() -> None:
    assert OLD not in repr(iam_settings(NEW, OLD))


# --- sealed values ----------------------------------------------------------------------------


def test_a_value_sealed_under_an_earlier_key_opens_and_says_so() -> None:
    sealed = Sealer(b"label:", [OLD]).seal("plain")
    opened = Sealer(b"label:", [NEW, OLD]).open(sealed)
    assert opened.plain == "plain" and opened.stale
    resealed = Sealer(b"label:", [NEW, OLD]).seal(opened.plain)
    assert Sealer(b"label:", [NEW]).open(resealed).plain == "plain", "sealed anew under the current key alone"
    assert not Sealer(b"label:", [NEW, OLD]).open(resealed).stale


def test_a_value_no_configured_key_sealed_does_not_open() -> None:
    sealed = Sealer(b"label:", [LOST]).seal("plain")
    with pytest.raises(InvalidToken):
        Sealer(b"label:", [NEW, OLD]).open(sealed)
    with pytest.raises(InvalidToken):
        Sealer(b"label:", [NEW]).open(sealed)


def test_each_use_keeps_its_own_key() -> None:
    sealed = Sealer(totp.LABEL, [NEW]).seal("plain")
    with pytest.raises(InvalidToken):
        Sealer(temp_passwords.LABEL, [NEW]).open(sealed)


def test_totp_secrets_sealed_before_the_rotation_still_open() -> None:
    secret = totp.new_secret()
    before = totp.encrypt_secret(secret, OLD)
    assert totp.open_secret(before, [NEW, OLD]).plain == secret
    with pytest.raises(InvalidToken):
        totp.open_secret(before, [NEW])


def test_temporary_passwords_sealed_before_the_rotation_still_open() -> None:
    user_id = uuid.uuid4()
    before = temp_passwords.seal(user_id, "Temp-password-1", OLD)
    assert temp_passwords.unseal(user_id, before, [NEW, OLD]) == "Temp-password-1"
    assert temp_passwords.unseal(user_id, before, [NEW]) is None
    assert temp_passwords.unseal(uuid.uuid4(), before, [NEW, OLD]) is None, "still bound to its user"


# --- signed tokens ----------------------------------------------------------------------------


def _access_claims() -> tokens.AccessClaims:
    return tokens.AccessClaims(
        user_id=str(uuid.uuid4()),
        org_id=str(uuid.uuid4()),
        role="OWNER",
        session_id=str(uuid.uuid4()),
        mfa_verified=True,
        expires_at=int(time.time()) + 600,
    )


def test_access_tokens_signed_under_an_earlier_key_verify() -> None:
    claims = _access_claims()
    assert tokens.decode_access(tokens.encode_access(claims, OLD), NEW, OLD) == claims
    assert tokens.decode_access(tokens.encode_access(claims, NEW), NEW, OLD) == claims
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.decode_access(tokens.encode_access(claims, LOST), NEW, OLD)
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.decode_access(tokens.encode_access(claims, OLD))


def test_an_expired_token_under_an_earlier_key_is_refused_as_expired() -> None:
    """Only a bad signature moves on to the next key: what a key did sign is judged as it is."""
    expired = tokens.encode_access(
        tokens.AccessClaims(**{**_access_claims().__dict__, "expires_at": int(time.time()) - 60}), OLD
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        tokens.decode_access(expired, NEW, OLD)


def _signup_token(key: str, org_id: uuid.UUID, signup_id: uuid.UUID) -> str:
    """A confirmation token as `signups.issue_token` signs it."""
    payload = {
        "typ": signups.TOKEN_TYPE,
        "sub": str(signup_id),
        "org": str(org_id),
        "exp": int(time.time()) + 60,
    }
    return jwt.encode(payload, signups._key(key), algorithm="HS256")


def test_signup_links_emailed_before_the_rotation_still_confirm() -> None:
    org_id, signup_id = uuid.uuid4(), uuid.uuid4()
    before = _signup_token(OLD, org_id, signup_id)
    assert signups._claims(iam_settings(NEW, OLD), before) == (org_id, signup_id)
    assert signups._claims(iam_settings(NEW, OLD), _signup_token(NEW, org_id, signup_id)) == (
        org_id,
        signup_id,
    )
    for settings in (iam_settings(NEW), iam_settings(NEW, LOST)):
        with pytest.raises(Unauthenticated) as refused:
            signups._claims(settings, before)
        assert refused.value.code == "invalid_signup_token"
