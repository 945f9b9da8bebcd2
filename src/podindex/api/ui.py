"""The web UI's files: ``/ui/`` (the page and its assets), ``/`` redirecting there.

The page is one more client of the public API (DESIGN.md): this module only
serves files. They ship inside the package (``podindex/ui/static``: our own
HTML, JS and CSS, and the xterm.js files ``scripts/build-ui`` takes from
the npm registry), so serving needs no Node.js.

Every file is read once, at the first request, with its content type and a
strong ETag; answers carry ``Cache-Control: no-cache`` (the browser keeps
the file and revalidates it, a ``304`` while it is the same, so an upgrade
is seen at once) and a strict Content-Security-Policy: scripts only from
this origin, nothing inline, no frames, requests only to this origin.
(``style-src`` allows inline styles: xterm.js sizes its rows with a style
element it writes at run time. No script can be injected through it.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from podindex.api.errors import ApiProblem

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(root: Path) -> dict[str, Asset]:
    """Every servable file under ``root`` by its path relative to it (``vendor/xterm.js``)."""
    assets: dict[str, Asset] = {}
    if not root.is_dir():
        return assets
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.relative_to(root).as_posix()] = Asset(body, content_type, etag)
    return assets


def routes(root: Path = STATIC) -> list[Route]:
    loaded: dict[str, Asset] | None = None

    def assets() -> dict[str, Asset]:
        nonlocal loaded
        if loaded is None:
            loaded = load_assets(root)
        return loaded

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    async def asset(request: Request) -> Response:
        name = request.path_params.get("path") or "index.html"
        found = assets().get(name)
        if found is None:
            if name == "index.html":
                raise ApiProblem(
                    404, "ui_not_built", "the web UI's files are missing from this installation"
                )
            raise ApiProblem(404, "not_found", f"no file {name[:100]!r} in the web UI")
        headers = {**HEADERS, "ETag": found.etag}
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else found.body
        response = Response(body, media_type=found.content_type, headers=headers)
        if request.method == "HEAD":
            response.headers["content-length"] = str(len(found.body))
        return response

    return [
        Route("/", home, methods=["GET", "HEAD"]),
        Route("/ui", home, methods=["GET", "HEAD"]),
        Route("/ui/", asset, methods=["GET", "HEAD"]),
        Route("/ui/{path:path}", asset, methods=["GET", "HEAD"]),
    ]
