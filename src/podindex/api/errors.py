"""JSON errors, everywhere: ``{"error": <code>, "message": <text>}`` with a 4xx/5xx status.

Handlers raise :class:`ApiProblem`; Starlette's own 404/405 and any unexpected
exception are turned into the same shape, so a client never has to parse HTML.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from podindex.answers import error_body

log = logging.getLogger("podindex.api")


class ApiProblem(Exception):
    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


def json_error(status: int, error: str, message: str) -> Response:
    return Response(error_body(error, message), status_code=status, media_type="application/json")


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    response = json_error(exc.status, exc.error, exc.message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed"}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = _HTTP_ERRORS.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    response = json_error(exc.status_code, error, str(message))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_error(500, "internal_error", "internal error; see the service log")
