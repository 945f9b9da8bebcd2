"""``GET /api/whoami``: who the caller is and what it may do, so a front end can hide
the controls its role may not use (the API still refuses them).

The answer names the caller and its grants (role, and the namespaces where it
holds) and how lookups are configured; never the token.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.api.auth import Authenticator, Role


async def whoami(request: Request) -> Response:
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.caller(request.headers.get("authorization"))
    body = {
        "name": principal.name,
        "via": principal.via,
        "role": principal.role.name.lower(),
        "grants": [
            {
                "role": grant.role.name.lower(),
                "namespaces": None if grant.namespaces is None else sorted(grant.namespaces),
            }
            for grant in principal.grants
        ],
        "lookups": "open" if authenticator.lookup_role is Role.NONE else "reader",
    }
    return Response(msgspec.json.encode(body), media_type="application/json")


def routes() -> list[Route]:
    return [Route("/api/whoami", whoami, methods=["GET"])]
