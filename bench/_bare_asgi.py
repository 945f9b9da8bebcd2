"""A bare ASGI app answering one fixed body: granian's own ceiling, beside podindex's.

Served by ``granian --interface asgi --workers 1`` from bench/bench_http.py;
the body is read from ``BARE_BODY_FILE`` (the real ``/pod`` answer).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

_BODY = Path(os.environ.get("BARE_BODY_FILE", "/dev/null")).read_bytes()
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))],
}
_BODY_MSG = {"type": "http.response.body", "body": _BODY}


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[Any], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY_MSG)


async def rsgi_app(scope: Any, proto: Any) -> None:
    """The same answer over granian's RSGI interface, to price ASGI itself."""
    proto.response_bytes(200, [("content-type", "application/json")], _BODY)
