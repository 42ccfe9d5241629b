"""The operators' dashboard in headless Chromium, on the real operator API.

`operator_switch` (operator_harness.py) clears the demo's payments between the simulated
banks of config/demo.toml on an embedded switch (SQLite, the in-process transport) and
serves the operator API over HTTPS with a server certificate of a throwaway scheme CA;
the banks then go on paying, 30 to 70 payments a second, while Debian's chromium
(driven by Playwright, see dashboard_browser.py) watches /dashboard with a viewer token.

The screenshot is saved to var/screenshots/dashboard.png; with
RTPSWITCH_DOCS_SCREENSHOT=1 it also replaces docs/dashboard.png, the README's picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import cycle
from pathlib import Path

import pytest

from switch.api.dashboard import CONTENT_SECURITY_POLICY
from switch.core import PaymentState, to_minor
from switch.demo import UNKNOWN_AGENT, Demo
from switch.iso20022.reasons import REASONS
from switch.iso20022.views import Agent
from switch.operations import Role
from switch.operator_service import Operator, OperatorService
from switch.store.base import PaymentQuery
from tests.e2e.dashboard_browser import DashboardBrowser, chromium_path, open_dashboard
from tests.e2e.operator_harness import OperatorSwitch, operator_switch

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "var" / "screenshots" / "dashboard.png"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
PAYMENTS = 300  # every scenario of the demo's mix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not chromium_path().exists() and not os.environ.get("CI"),
        reason=f"no {chromium_path()} (scripts/bringup installs Debian's chromium)",
    ),
]


@dataclass
class Live:
    """A switch that cleared the demo's payments, with its operator API up."""

    switch: OperatorSwitch

    @property
    def demo(self) -> Demo:
        return self.switch.demo

    @property
    def service(self) -> OperatorService:
        return self.switch.service

    @property
    def banks(self) -> list[str]:
        return list(self.demo.banks)

    @property
    def server_cert(self) -> Path:
        return self.switch.pki / "server" / "server.crt"


async def trickle(demo: Demo, stop: asyncio.Event) -> None:
    """Payments between the banks, 30 to 70 a second; about one in ten is refused."""
    a, b, c, d = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX", "BNKDUS33XXX"
    settle = [(a, b, None), (b, c, None), (c, a, None), (b, a, None), (a, c, None)] * 2
    refused = [
        (b, a, "AC03-000001"),  # Bank A rejects payments to this account (AC03)
        (c, b, "AC04-000001"),  # Bank B: AC04
        (a, c, "AC06-000001"),  # Bank C: AC06
        (d, a, None),  # more than Bank D's position (AM04)
        (a, UNKNOWN_AGENT, None),  # no such participant (RC04)
    ]
    flows = cycle([flow for r in refused for flow in [*settle, r]])
    tick = 0
    while not stop.is_set():
        tick += 1
        for _ in range(5 + round(2 * math.sin(tick / 12))):
            debtor, creditor, account = next(flows)
            amount = Decimal(5000 if debtor == d else 100 + 37 * (tick % 50))
            await demo.banks[debtor].pay(
                creditor_agent=Agent(bicfi=creditor), amount=amount, creditor_account=account
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """The demo's switch with its operator API (operator_harness), the banks paying on."""
    store = f"sqlite:///{tmp_path / 'switch.db'}"
    async with operator_switch(tmp_path, store, payments=PAYMENTS, seed=2026) as switch:
        stop = asyncio.Event()
        paying = asyncio.create_task(trickle(switch.demo, stop))
        try:
            yield Live(switch)
        finally:
            stop.set()
            await paying


async def viewer_token(live: Live) -> tuple[str, str]:
    """A new viewer token (as `rtpswitch token create` makes one): its id and text."""
    token, text = await live.service.create_token("dashboard-test", Role.VIEWER, None)
    return token.id, text


async def texts(dashboard: DashboardBrowser, selector: str) -> list[str]:
    return [t.strip() for t in await dashboard.page.locator(selector).all_inner_texts()]


async def test_an_operator_watches_the_switch_on_the_dashboard(live: Live) -> None:
    token_id, token = await viewer_token(live)
    async with open_dashboard(live.switch.url, trust=live.server_cert) as dashboard:
        page = dashboard.page
        headers = await dashboard.open()
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        await page.locator("#login").wait_for(state="visible")
        assert await page.locator("#app").is_hidden()

        # A wrong token: the form says why, and nothing is kept.
        await dashboard.sign_in(f"rtpo_{token_id}_{'0' * 43}")
        error = await dashboard.login_error()
        assert "token" in error
        assert await page.locator("#app").is_hidden()
        assert await page.evaluate("sessionStorage.length") == 0

        # The viewer token: every bank, both charts, the totals.
        await dashboard.sign_in(token)
        await dashboard.wait_for_data(live.banks)
        assert await page.locator("#login").is_hidden()
        assert await page.locator("#switch-status").inner_text() == "Engine running"
        rows = await page.locator("#participants tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.participant)"
        )
        assert sorted(rows) == sorted(live.banks)
        for chart in ("#throughput-chart", "#reject-chart"):
            assert int(await page.locator(chart).get_attribute("data-points") or 0) > 0
        await page.wait_for_function(
            "() => document.querySelectorAll('#throughput-chart path.line').length === 4"
        )
        payments = int(
            (await page.locator('[data-total="payments"]').inner_text()).replace(",", "")
        )
        assert 0 < payments <= live.demo.engine.stats.payments
        assert (await page.locator('[data-latency="p50"]').inner_text()).endswith("ms")

        # Low positions: exactly the banks whose available position is under the threshold.
        threshold = to_minor(live.demo.settings.operations.low_position)
        low = sorted(
            p for p in live.banks if live.demo.engine.book.position(p).available < threshold
        )
        assert "BNKDUS33XXX" in low  # funded 1,000.00 and only ever a debtor
        shown = await page.locator('#participants tr[data-low-position="true"]').evaluate_all(
            "rows => rows.map(r => r.dataset.participant)"
        )
        assert sorted(shown) == low
        warning = page.locator('tr[data-participant="BNKDUS33XXX"] [data-testid="low-position"]')
        assert await warning.is_visible()
        assert "Low position" in await warning.inner_text()
        alert = page.locator(
            '#alerts li[data-alert="low_position"][data-participant="BNKDUS33XXX"]'
        )
        await alert.wait_for()

        # Recent rejects: a rejected payment of the store, with its reason code and text.
        await page.locator('#recent-rejects [data-testid="reject-row"]').first.wait_for()
        shown_ids = await page.locator('#recent-rejects [data-testid="reject-row"]').evaluate_all(
            "rows => rows.map(r => r.dataset.payment)"
        )
        rejected = await live.demo.store.search_payments(
            PaymentQuery(state=PaymentState.REJECTED, limit=200)
        )
        with_reason = [p for p in rejected if p.id in shown_ids and p.reason in REASONS]
        assert with_reason, "no rejected payment with a known reason among the recent rejects"
        payment = with_reason[0]
        reason = await page.locator(
            f'tr[data-payment="{payment.id}"] [data-testid="reason"]'
        ).inner_text()
        assert payment.reason is not None
        assert payment.reason in reason
        name = REASONS[payment.reason].name  # shown as words: "Invalid creditor account ..."
        assert re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower() in reason.lower()

        # Live: the page keeps polling while the banks go on paying.
        before = await page.locator("#updated").inner_text()
        await page.wait_for_function(
            f"() => document.getElementById('updated').textContent !== {before!r}", timeout=8000
        )
        assert await page.locator("#connection").inner_text() == "Live"

        # The picture: once the charts hold a quarter of a minute.
        await page.wait_for_function(
            "() => Number(document.getElementById('throughput-chart').dataset.points) >= 15",
            timeout=30_000,
        )
        shot = await dashboard.screenshot(SCREENSHOT)
        if os.environ.get("RTPSWITCH_DOCS_SCREENSHOT") == "1":
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        # A reload keeps the session (the token is in this tab's sessionStorage) ...
        await page.reload()
        await dashboard.wait_for_data(live.banks)

        # ... until the token is revoked: the next poll's 401 returns to the form.
        admin = Operator(token="test", name="test-admin", role=Role.ADMIN)
        await live.service.revoke_token(token_id, admin)
        error = await dashboard.login_error()
        assert "revoked" in error
        assert await page.locator("#app").is_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
        assert await texts(dashboard, "#participants tbody td") == ["No data yet"]

        # Signing out forgets the token too.
        _, again = await viewer_token(live)
        await dashboard.sign_in(again)
        await dashboard.wait_for_data(live.banks)
        await page.get_by_role("button", name="Sign out").click()
        await page.locator("#login").wait_for(state="visible")
        assert await page.evaluate("sessionStorage.length") == 0
        assert await page.locator("#login-error").is_hidden()

        assert dashboard.problems == []
