"""The operators' dashboard: one static page that polls `GET /v1/dashboard`.

The page (`index.html`, `dashboard.js`, `dashboard.css` in `DASHBOARD_DIR`) asks for an
operator token, keeps it in the tab's sessionStorage and polls the operator API every
two seconds with it as a bearer token; it draws its charts itself (SVG, no framework,
no external asset), so it works on a machine with no internet access.

`dashboard_routes()` serves it: `GET /dashboard` the page (it needs no token: it holds
no data), `GET /dashboard/static/<name>` its script, style sheet and icon. Only the
files of `STATIC_FILES` are served, with their own content type, an ETag (a repeated
request with `If-None-Match` answers 304) and a strict Content-Security-Policy: scripts,
styles, images and requests from the switch's own origin only, no inline script or
style, no framing. Add the routes to an app with `app.router.routes.extend(...)` or
`app.include_router(dashboard_router())`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_DIR",
    "DASHBOARD_PATH",
    "SECURITY_HEADERS",
    "STATIC_FILES",
    "STATIC_PREFIX",
    "dashboard_router",
    "dashboard_routes",
]

DASHBOARD_DIR: Final = Path(__file__).resolve().parent / "static"
"""Where the page's files are (installed with the package)."""

DASHBOARD_PATH: Final = "/dashboard"
STATIC_PREFIX: Final = "/dashboard/static"

STATIC_FILES: Final[Mapping[str, str]] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files served under `STATIC_PREFIX`, each with its content type; nothing else is."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Everything from the switch's own origin only; no inline script or style, no framing."""

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
"""Sent with the page and each of its files."""


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def read(cls, name: str, media_type: str) -> _Asset:
        body = (DASHBOARD_DIR / name).read_bytes()
        return cls(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def _etags(header: str) -> set[str]:
    """The entity tags an If-None-Match header names (weak ones compare as strong)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def dashboard_routes() -> list[BaseRoute]:
    """`GET /dashboard` (the page) and `GET /dashboard/static/{name}` (its files).

    The files are read once, here; an unknown name answers 404 (Starlette's
    HTTPException, which the API's handlers turn into a problem).
    """
    page = _Asset.read("index.html", "text/html; charset=utf-8")
    assets = {name: _Asset.read(name, media_type) for name, media_type in STATIC_FILES.items()}

    async def dashboard(request: Request) -> Response:
        return page.response(request)

    async def static(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None:
            raise HTTPException(404, "no such file of the dashboard")
        return asset.response(request)

    return [
        Route(DASHBOARD_PATH, dashboard, methods=["GET"], name="dashboard"),
        Route(STATIC_PREFIX + "/{name}", static, methods=["GET"], name="dashboard_static"),
    ]


def dashboard_router() -> APIRouter:
    """The same routes as an APIRouter (left out of the OpenAPI description)."""
    return APIRouter(routes=dashboard_routes(), include_in_schema=False)
