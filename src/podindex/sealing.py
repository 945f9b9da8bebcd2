"""Sealing integration bearer tokens for storage: encrypted at rest with the service's key.

The key is a Fernet key (AES-128-CBC with HMAC-SHA256, authenticated) read
from the file that ``secret_key_file`` names. Without a key nothing is sealed
and no token is ever stored: callers refuse instead. A sealed token opens only
with the key that sealed it; a wrong key is reported, never guessed around.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

GENERATE_HINT = (
    "generate one with: python -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' > key"
)


class SealingError(Exception):
    """No usable key, or a sealed value that this key cannot open. Never carries the secret."""


class Sealer:
    """Encrypts and decrypts secrets with one key; ``repr`` never shows the key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SealingError(
                f"the secret key is not a Fernet key (32 url-safe base64 bytes); {GENERATE_HINT}"
            ) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Sealer:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise SealingError(f"cannot read secret_key_file {path}: {exc.strerror}") from None
        return cls(raw)

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise SealingError(
                "a stored token does not open with this secret key (was the key changed?)"
            ) from None

    def __repr__(self) -> str:
        return "Sealer(****)"
