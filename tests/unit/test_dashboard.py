"""The dashboard's static serving: content types, the Content-Security-Policy, caching.

The page itself is exercised in headless Chromium by tests/e2e/test_dashboard.py; here
the routes are called as an ASGI app, and the page's files are checked for what the
policy would refuse (inline script or style, other origins).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from switch.api.dashboard import (
    CONTENT_SECURITY_POLICY,
    DASHBOARD_DIR,
    STATIC_FILES,
    dashboard_router,
    dashboard_routes,
)

ROOT = Path(__file__).resolve().parents[2]


async def get(
    app: Any, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app: status, headers (lower-case names), body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    app.include_router(dashboard_router())
    return app


async def test_the_page_is_html_with_a_strict_policy(app: FastAPI) -> None:
    status, headers, body = await get(app, "/dashboard")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    policy = headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert body == (DASHBOARD_DIR / "index.html").read_bytes()


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_each_file_has_its_type(app: FastAPI, name: str, media_type: str) -> None:
    status, headers, body = await get(app, f"/dashboard/static/{name}")
    assert status == 200
    assert headers["content-type"] == media_type
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert body == (DASHBOARD_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/index.js",
        "/dashboard/static/..%2F__init__.py",
        "/dashboard/static/../__init__.py",
        "/dashboard/static/",
        "/dashboard/static/__init__.py",
    ],
)
async def test_nothing_else_is_served(app: FastAPI, path: str) -> None:
    status, _, body = await get(app, path)
    assert status == 404
    assert b"import" not in body


async def test_a_known_version_answers_304(app: FastAPI) -> None:
    _, first, _ = await get(app, "/dashboard/static/dashboard.js")
    etag = first["etag"]
    assert first["cache-control"] == "no-cache"
    status, headers, body = await get(
        app, "/dashboard/static/dashboard.js", {"If-None-Match": etag}
    )
    assert (status, body, headers["etag"]) == (304, b"", etag)
    status, _, _ = await get(app, "/dashboard/static/dashboard.js", {"If-None-Match": '"other"'})
    assert status == 200


def test_the_routes_are_plain_starlette_routes() -> None:
    paths = [getattr(route, "path", None) for route in dashboard_routes()]
    assert paths == ["/dashboard", "/dashboard/static/{name}"]


class _Markup(HTMLParser):
    """Every tag's attributes, and whether any script has a body of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.inline_script = True


def test_the_page_needs_nothing_the_policy_refuses() -> None:
    markup = _Markup()
    markup.feed((DASHBOARD_DIR / "index.html").read_text("utf-8"))
    assert not markup.inline_script
    tags = {tag for tag, _ in markup.tags}
    assert "style" not in tags
    for tag, attrs in markup.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for ref in (attrs.get("src"), attrs.get("href")):
            if ref is not None:
                assert ref.startswith("/dashboard/static/"), ref
                assert ref.removeprefix("/dashboard/static/") in STATIC_FILES, ref
    script = (DASHBOARD_DIR / "dashboard.js").read_text("utf-8")
    for unsafe in (
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "Function(",
        ".write(",
    ):
        assert unsafe not in script, unsafe
    assert 'setAttribute("style"' not in script
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script)
    assert not re.search(r"url\(|@import|https?://", (DASHBOARD_DIR / "dashboard.css").read_text())


def test_the_files_ship_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert "switch.api.dashboard" in config["packages"]
    patterns = config["package-data"]["switch.api.dashboard"]
    package = DASHBOARD_DIR.parent
    for name in ["index.html", *STATIC_FILES]:
        relative = (DASHBOARD_DIR / name).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), name
