"""Access files for tests: tokens by role, written as the service reads them (hashed)."""

from __future__ import annotations

from pathlib import Path

from podindex.api.auth import token_digest

ADMIN_TOKEN = "test-admin-token"
READER_TOKEN = "test-reader-token"


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    """An access file at ``path`` granting each token its role (``reader`` or ``admin``)."""
    lines = ["tokens:"]
    for i, (token, role) in enumerate(tokens.items()):
        lines.append(
            f"  - {{name: caller-{i}-{role}, role: {role}, sha256: {token_digest(token)}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def standard_tokens(directory: Path) -> Path:
    """An access file with :data:`ADMIN_TOKEN` (admin) and :data:`READER_TOKEN` (reader)."""
    return write_tokens(directory / "access.yaml", {ADMIN_TOKEN: "admin", READER_TOKEN: "reader"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
