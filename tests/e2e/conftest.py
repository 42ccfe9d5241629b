"""End-to-end fixtures: a switch (engine + real store + in-process transport) and banks.

Each test gets a fresh store, on SQLite and on PostgreSQL alike. A `Switch` harness runs
the engine as a task and lets a test act as a participant: send raw bytes on a bank's
channel and read what the switch sends back, parsed and checked against the scheme
schemas and the ISO base schemas (every message the switch emits must pass both).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from participants.messages import credit_transfer, envelope, status_request
from switch.core import Participant, ParticipantStatus
from switch.core.money import to_minor
from switch.engine import Engine
from switch.iso20022 import Message, MessageType, parse, validate, views
from switch.iso20022.build import status_report
from switch.iso20022.views import Agent
from switch.settings import Settings, load_settings
from switch.store.base import Store, open_store
from switch.store.testing import ensure_test_database, reset_database
from switch.transport import LocalNetwork
from tests.oracle import base_errors

SWITCH = Agent(bicfi="SWCHUS33XXX")
BANKS = {
    "BNKAUS33XXX": ("021000021", "Bank A"),
    "BNKBUS33XXX": ("011000015", "Bank B"),
    "BNKCUS33XXX": ("026009593", "Bank C"),
    "BNKSUS33XXX": ("026009594", "Suspended Bank"),
}
A, B, C, S = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX", "BNKSUS33XXX"
OPENING = Decimal("1000.00")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'switch.db'}"
    url = await ensure_test_database("rtpswitch_e2e")
    await reset_database(url)
    return url


@dataclass
class Received:
    """A message the switch sent to a bank, read back."""

    raw: bytes
    msg: Message
    header: views.Header
    view: views.View | None


@dataclass
class Switch:
    """A running switch and helpers to act as its participants."""

    settings: Settings
    store: Store
    network: LocalNetwork
    engine: Engine
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Start the engine loop."""
        await self.engine.start()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.engine.run(self.stop))

    async def halt(self) -> None:
        """Stop the engine loop (the store stays open)."""
        self.stop.set()
        if self.task is not None:
            await self.task

    async def send(self, sender: str, raw: bytes) -> None:
        """Send raw bytes to the switch as `sender`."""
        await self.network.connect(sender).send(raw)

    async def receive(self, participant: str, timeout: float = 3.0) -> Received:
        """The next message the switch sent `participant` (fails the test if none comes)."""
        raw = await self.network.connect(participant).receive(timeout)
        assert raw is not None, f"{participant} received nothing within {timeout} s"
        msg = parse(raw)
        assert validate(msg) == [], "switch emitted a message invalid for the scheme"
        assert base_errors(raw) == [], "switch emitted a message invalid for ISO 20022"
        assert msg.header is not None
        return Received(raw, msg, views.header(msg.header), views.document_view(msg))

    async def nothing_for(self, participant: str, seconds: float = 0.3) -> None:
        """Assert the switch sends `participant` nothing for `seconds`."""
        raw = await self.network.connect(participant).receive(seconds)
        assert raw is None, f"unexpected message to {participant}: {raw[:200]!r}"

    def available(self, participant: str) -> int:
        """Available position in minor units."""
        return self.engine.book.position(participant).available

    async def archived_inbound(self) -> int:
        """How many inbound messages the store archived (by hash)."""
        return len((await self.store.load_state()).inbound_hashes)


@contextlib.asynccontextmanager
async def running_switch(settings: Settings) -> AsyncIterator[Switch]:
    """A running switch on `settings.store` with banks A, B, C (active, funded) and S
    (suspended)."""
    store = open_store(settings.store)
    await store.migrate()
    await store.upsert_participants(
        Participant(
            id=bic,
            member_id=mid,
            name=name,
            status=ParticipantStatus.SUSPENDED if bic == S else ParticipantStatus.ACTIVE,
        )
        for bic, (mid, name) in BANKS.items()
    )
    network = LocalNetwork()
    sw = Switch(
        settings, store, network, Engine(settings=settings, store=store, transport=network.switch)
    )
    await sw.engine.start()
    for bic in BANKS:
        await sw.engine.fund(bic, to_minor(OPENING), "test-opening")
    await sw.start()
    try:
        yield sw
    finally:
        await sw.halt()
        await store.close()


@pytest.fixture
async def switch(store_url: str) -> AsyncIterator[Switch]:
    """A running switch with banks A, B, C (active, funded) and S (suspended)."""
    async with running_switch(load_settings(store=store_url, response_timeout=0.5)) as sw:
        yield sw


def pacs008(
    debtor: str = A,
    creditor: str = B,
    *,
    amount: str = "10.00",
    currency: str = "USD",
    account: str = "123456789",
    msg_id: str | None = None,
    uetr: str | None = None,
    e2e: str | None = None,
    tx_id: str | None = None,
    sender: str | None = None,
    debtor_agent: Agent | None = None,
    creditor_agent: Agent | None = None,
) -> bytes:
    """A pacs.008 business message from `sender` (default: the debtor agent)."""
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    doc = credit_transfer(
        msg_id=msg_id or f"M{n}",
        created=now,
        uetr=uetr or str(uuid4()),
        end_to_end_id=e2e or f"E{n}",
        tx_id=tx_id or f"T{n}",
        amount=Decimal(amount),
        currency=currency,
        debtor_agent=debtor_agent or Agent(bicfi=debtor),
        creditor_agent=creditor_agent or Agent(bicfi=creditor),
        debtor_name="Alice Payer",
        debtor_account="000111222",
        creditor_name="Bob Payee",
        creditor_account=account,
        settlement_date=date(2026, 11, 21),
    )
    return envelope(Agent(bicfi=sender or debtor), SWITCH, MessageType.PACS_008, f"H{n}", doc, now)


def pacs002(sender: str, forwarded: Received, status: str, reason: str | None = None) -> bytes:
    """The creditor agent's answer to a forwarded pacs.008."""
    assert isinstance(forwarded.view, views.CreditTransfer)
    ct = forwarded.view
    tx = ct.transactions[0]
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    doc = status_report(
        msg_id=f"S{n}",
        created=now,
        status=status,
        original_msg_id=ct.msg_id,
        original_end_to_end_id=tx.end_to_end_id,
        original_tx_id=tx.tx_id,
        original_uetr=tx.uetr,
        reason=reason,
        instructing_agent=Agent(bicfi=sender),
        instructed_agent=SWITCH,
    )
    return envelope(Agent(bicfi=sender), SWITCH, MessageType.PACS_002, f"H{n}", doc, now)


def pacs028(sender: str, uetr: str, original_msg_id: str) -> bytes:
    """A status request about `uetr`."""
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    doc = status_request(
        msg_id=f"Q{n}",
        created=now,
        original_msg_id=original_msg_id,
        original_uetr=uetr,
        instructing_agent=Agent(bicfi=sender),
        instructed_agent=SWITCH,
    )
    return envelope(Agent(bicfi=sender), SWITCH, MessageType.PACS_028, f"H{n}", doc, now)


def status_of(r: Received) -> tuple[str | None, tuple[str, ...]]:
    """(TxSts, reasons) of a received pacs.002."""
    assert isinstance(r.view, views.StatusReport), r.raw[:300]
    st = r.view.transactions[0]
    return st.status, st.reasons
