"""OAuth tokens sealed at rest: AES-256-GCM with a random 12-byte nonce and the associated data
`"{org_id}:{provider}:{kind}"`, so a sealed token copied into another org's row (or used as the other
kind of token) does not open.

A sealed value is `key_id (1 byte) || nonce (12) || ciphertext+tag`. The key id is the first byte of
SHA-256 of the key: INTEGRATIONS_TOKEN_OLD_KEYS still open what they sealed during a rotation, and the
current key (INTEGRATIONS_TOKEN_KEY) is the only one that seals."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
# What is sealed: the two tokens of a connection and the PKCE verifier of a consent round trip.
ACCESS = "access"
REFRESH = "refresh"
VERIFIER = "verifier"


class TokenUnreadable(Exception):
    """No key opened the value (a key removed too early, or a row moved or altered)."""


def key_id(key: bytes) -> int:
    return hashlib.sha256(key).digest()[0]


def associated_data(org_id: uuid.UUID | str, provider: str, kind: str) -> bytes:
    return f"{org_id}:{provider}:{kind}".encode()


@dataclass(frozen=True)
class TokenBox:
    """Seals with the first key, opens with any (`keys` from IntegrationsSettings.token_keys)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("INTEGRATIONS_TOKEN_KEY is not set: tokens cannot be sealed")
        for key in self.keys:
            if len(key) != 32:
                raise ValueError("token keys are 32 bytes")

    def seal(self, plaintext: str, org_id: uuid.UUID | str, provider: str, kind: str) -> bytes:
        key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), associated_data(org_id, provider, kind))
        return bytes([key_id(key)]) + nonce + sealed

    def open(self, sealed: bytes, org_id: uuid.UUID | str, provider: str, kind: str) -> str:
        if len(sealed) < 1 + NONCE_BYTES + 16:
            raise TokenUnreadable("sealed token is too short")
        wanted, nonce, body = sealed[0], sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        aad = associated_data(org_id, provider, kind)
        # Keys whose id matches first; ids are one byte, so a collision only costs a second try.
        for key in sorted(self.keys, key=lambda k: key_id(k) != wanted):
            try:
                return AESGCM(key).decrypt(nonce, body, aad).decode()
            except InvalidTag:
                continue
        raise TokenUnreadable("no token key opens this value (wrong org, provider or kind, or key gone)")
