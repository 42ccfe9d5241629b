"""Headless Chromium on the operators' dashboard: Debian's `chromium`, driven by Playwright.

Playwright talks to the browser over the Chrome DevTools Protocol; it is given the
system's browser (`executable_path`), so no browser build is ever downloaded
(`playwright install` is not needed). `scripts/bringup` installs Debian's `chromium`.

The operator API serves HTTPS with a server certificate of the scheme CA, which the
browser does not know. Rather than ignoring certificate errors, the browser is told to
accept exactly that server's key (`--ignore-certificate-errors-spki-list` with the
SHA-256 of the certificate's public key): any other certificate is still refused.

`DashboardBrowser` opens /dashboard, signs in with a token, waits until the page shows
the data, and takes screenshots; it also collects everything the browser complains
about (console errors such as a Content-Security-Policy violation, uncaught script
errors, failed requests) in `problems`, so a test can assert there were none.

Run by hand against a running switch:
    RTPSWITCH_OPERATOR_TOKEN=rtpo_... python -m tests.e2e.dashboard_browser \\
        https://127.0.0.1:8443 --trust var/pki/server/server.crt --out var/screenshots/d.png
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import ConsoleMessage, Page, Request, ViewportSize, async_playwright

__all__ = [
    "CHROMIUM",
    "VIEWPORT",
    "DashboardBrowser",
    "chromium_path",
    "open_dashboard",
    "spki_pin",
]

CHROMIUM: Final = Path("/usr/bin/chromium")
"""Debian's chromium (override with $RTPSWITCH_CHROMIUM)."""

VIEWPORT: Final = ViewportSize(width=1280, height=800)


def chromium_path() -> Path:
    """The browser to drive: $RTPSWITCH_CHROMIUM, else Debian's."""
    return Path(os.environ.get("RTPSWITCH_CHROMIUM") or CHROMIUM)


def spki_pin(certificate: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium pins keys."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class DashboardBrowser:
    """One browser page on the dashboard of the switch at `base_url`."""

    page: Page
    base_url: str
    problems: list[str] = field(default_factory=list)

    def watch(self) -> None:
        """Collect console errors, script errors and failed requests in `problems`."""

        def console(message: ConsoleMessage) -> None:
            if message.type == "error" and not self._expected(message.text):
                self.problems.append(f"console: {message.text}")

        def failed(request: Request) -> None:
            self.problems.append(f"request failed: {request.url} ({request.failure})")

        self.page.on("console", console)
        self.page.on("pageerror", lambda error: self.problems.append(f"script: {error}"))
        self.page.on("requestfailed", failed)

    @staticmethod
    def _expected(text: str) -> bool:
        """A refused token is the API's answer, not a fault of the page (Chromium logs it)."""
        return "status of 401" in text or "status of 403" in text

    async def open(self) -> dict[str, str]:
        """Load /dashboard (the sign-in form, or the data if this tab has a token).

        Returns the page's response headers (names in lower case).
        """
        response = await self.page.goto(f"{self.base_url}/dashboard", wait_until="load")
        assert response is not None and response.ok, response
        return await response.all_headers()

    async def sign_in(self, token: str) -> None:
        """Type `token` into the form and press "Sign in"."""
        await self.page.locator("#token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()

    async def login_error(self, timeout_ms: float = 10_000) -> str:
        """The error the sign-in form shows (waits for it)."""
        box = self.page.locator("#login-error")
        await box.wait_for(state="visible", timeout=timeout_ms)
        return (await box.inner_text()).strip()

    async def wait_for_data(
        self, participants: Collection[str], timeout_ms: float = 20_000
    ) -> None:
        """Until every one of `participants` has its row and both charts have points."""
        await self.page.locator("#app").wait_for(state="visible", timeout=timeout_ms)
        for participant in participants:
            row = self.page.locator(f'#participants tr[data-participant="{participant}"]')
            await row.wait_for(timeout=timeout_ms)
        await self.page.wait_for_function(
            "() => ['throughput-chart', 'reject-chart'].every("
            "id => Number(document.getElementById(id).dataset.points) > 0)",
            timeout=timeout_ms,
        )

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page unless `full_page` is False)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        return path


@asynccontextmanager
async def open_dashboard(
    base_url: str,
    *,
    trust: Path | None = None,
    viewport: ViewportSize | None = None,
) -> AsyncIterator[DashboardBrowser]:
    """A fresh headless Chromium with one page on `base_url` (not yet loaded).

    `trust`: the server's certificate (PEM), accepted by its key alone; leave it out for
    a server the browser trusts anyway (or plain HTTP).
    """
    args = ["--no-first-run", "--disable-dev-shm-usage"]
    if trust is not None:
        args.append(f"--ignore-certificate-errors-spki-list={spki_pin(trust)}")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path()), headless=True, args=args
        )
        try:
            context = await browser.new_context(
                viewport=viewport or VIEWPORT,
                device_scale_factor=1,
                color_scheme="dark",
                locale="en-US",
                timezone_id="UTC",
            )
            dashboard = DashboardBrowser(await context.new_page(), base_url.rstrip("/"))
            dashboard.watch()
            yield dashboard
        finally:
            await browser.close()


async def _screenshot(args: argparse.Namespace) -> int:
    token = os.environ.get("RTPSWITCH_OPERATOR_TOKEN", "")
    if not token:
        print(
            "set RTPSWITCH_OPERATOR_TOKEN to an operator token (viewer is enough)", file=sys.stderr
        )
        return 2
    async with open_dashboard(args.url, trust=args.trust) as dashboard:
        await dashboard.open()
        await dashboard.sign_in(token)
        await dashboard.wait_for_data(args.participant)
        await asyncio.sleep(args.settle)
        print(await dashboard.screenshot(args.out))
        for problem in dashboard.problems:
            print(f"problem: {problem}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Sign in to a running switch's dashboard and save a screenshot."""
    p = argparse.ArgumentParser(prog="python -m tests.e2e.dashboard_browser")
    p.add_argument("url", help="the operator API's base URL, e.g. https://127.0.0.1:8443")
    p.add_argument("--trust", type=Path, help="the API's server certificate (PEM)")
    p.add_argument("--out", type=Path, default=Path("var/screenshots/dashboard.png"))
    p.add_argument("--participant", action="append", default=[], help="wait for its row")
    p.add_argument("--settle", type=float, default=0.0, help="seconds to wait before the shot")
    return asyncio.run(_screenshot(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
