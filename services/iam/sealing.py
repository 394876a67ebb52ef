"""What iam keeps encrypted at rest (TOTP secrets, temporary passwords waiting for notify), under
Fernet keys derived from AUTH_SECRET_KEY with a label per use, so one use's ciphertext never opens
as another's.

Sealing always uses the current key. Opening tries the current key, then each earlier one
(AUTH_SECRET_KEY_PREVIOUS), and says when an earlier one was needed, so the caller can store the
value again under the current key: after a rotation nothing is locked out, and once every row is
sealed anew (lazily, or by `python -m services.iam.manage reencrypt-secrets`) the earlier key can go."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


@dataclass(frozen=True)
class Opened:
    plain: str
    # Sealed under an earlier key: store it again under the current one (`Sealer.seal`).
    stale: bool


def _fernet(label: bytes, auth_secret: str) -> Fernet:
    key = hashlib.sha256(label + auth_secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


class Sealer:
    """One use's keys: `keys` is the current AUTH_SECRET_KEY first, then the earlier ones
    (`AuthSecretSettings.auth_secret_keys`)."""

    def __init__(self, label: bytes, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a sealer needs at least the current key")
        self._current = _fernet(label, keys[0])
        earlier = [_fernet(label, key) for key in keys[1:]]
        self._earlier = MultiFernet(earlier) if earlier else None

    def seal(self, plain: str) -> str:
        return self._current.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> Opened:
        """Raises cryptography's InvalidToken when no configured key opens it (the key it was sealed
        under is gone, or the value was tampered with)."""
        token = sealed.encode()
        try:
            return Opened(self._current.decrypt(token).decode(), stale=False)
        except InvalidToken:
            if self._earlier is None:
                raise
        return Opened(self._earlier.decrypt(token).decode(), stale=True)
