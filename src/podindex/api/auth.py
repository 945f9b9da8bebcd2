"""PLACEHOLDER: the interface of main's bearer-token authentication, enforcing nothing yet.

main's "api: bearer-token authentication" commit adds the real module with
this interface; it replaces this file when merged into this branch. Until
then every caller is let through as an anonymous admin.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from starlette.requests import Request


class Role(enum.IntEnum):
    READER = 1
    ADMIN = 2


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


async def require(request: Request, role: Role) -> Principal:
    """The caller, if it has ``role``; else a 401/403 ApiProblem (not enforced here yet)."""
    return Principal("anonymous", Role.ADMIN)
