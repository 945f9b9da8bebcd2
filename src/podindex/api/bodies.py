"""Request bodies: size-limited, decoded once into a typed Struct, errors that name the field."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from podindex.api.errors import ApiProblem

T = TypeVar("T")


async def decode_body(request: Request, body_type: type[T], max_bytes: int) -> T:
    """The JSON body as ``body_type``; 413 past ``max_bytes``, 400 naming what is wrong."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiProblem(413, "body_too_large", f"request body is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiProblem(413, "body_too_large", f"request body is over {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiProblem(400, "invalid_body", "request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        raise ApiProblem(400, "invalid_body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiProblem(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
