"""The simulated bank, driven by hand from the switch's side of an in-process network."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from participants.messages import SWITCH, business_date, credit_transfer, envelope
from simulators import Behaviour, FinalStatus, SentPayment, SimulatedBank
from simulators import bank as bank_module
from simulators.bank import DEFAULT_CREDITOR_ACCOUNT, Action, Role
from switch.iso20022 import Message, build, parse, validate, views
from switch.iso20022.registry import MessageType, SchemaRegistry
from switch.iso20022.views import USABA, Agent, Proxy
from switch.transport import LocalNetwork

BASE = SchemaRegistry(Path(__file__).resolve().parents[3] / "shared" / "iso20022-base")

PID = "BNKBUS44XXX"
BANK_A = Agent(bicfi="BNKAUS33XXX")
BANK_B = Agent(bicfi=PID)
BANK_B_ABA = Agent(member_id="021000021", clearing_system=USABA)
SWITCH_ABA = Agent(member_id="000000000", clearing_system=USABA)
BEHAVIOURS = {
    "111": "accept",
    "222": "reject:AC04",
    "333": "silent",
    "444": "twice",
    "555": "late",
}
TIMEOUT = 0.2


@dataclass
class World:
    """A network, a bank on it, and the task running the bank."""

    network: LocalNetwork
    bank: SimulatedBank
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def _world(**options: Any) -> AsyncIterator[World]:
    network = LocalNetwork()
    settings: dict[str, Any] = {
        "bicfi": PID,
        "member_id": "021000021",
        "name": "Bank B",
        "channel": network.connect(PID),
        "behaviours": BEHAVIOURS,
        "response_timeout": TIMEOUT,
    }
    settings.update(options)
    bank = SimulatedBank(**settings)
    task = asyncio.create_task(bank.run())
    try:
        yield World(network=network, bank=bank, task=task)
    finally:
        bank.stop()
        await asyncio.wait_for(task, 1.0)
        assert bank.errors == []


@pytest.fixture(params=[True, False], ids=["fast", "lxml"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    async with _world(fast=request.param) as w:
        yield w


_seq = 0


def forwarded(
    account: str = "111",
    *,
    uetr: str | None = None,
    creditor_agent: Agent = BANK_B,
) -> tuple[bytes, str, str]:
    """A pacs.008 from bank A as the switch forwards it: (bytes, MsgId, UETR)."""
    global _seq
    _seq += 1
    now = datetime.now(UTC)
    msg_id = f"BNKA{_seq:012d}00000000"
    uetr = uetr or f"a41c7e90-2b6d-4f13-9e58-{_seq:012x}"
    doc = credit_transfer(
        msg_id=msg_id,
        created=now,
        uetr=uetr,
        end_to_end_id=f"E2E-{_seq}",
        tx_id=f"TX-{_seq}",
        amount=Decimal("25.00"),
        debtor_agent=BANK_A,
        creditor_agent=creditor_agent,
        debtor_name="Alice",
        debtor_account="000123",
        creditor_name="Bob",
        creditor_account=account,
        settlement_date=business_date(now),
    )
    raw = envelope(SWITCH, BANK_B, MessageType.PACS_008, f"SW{msg_id}", doc, now)
    return raw, msg_id, uetr


def from_switch_status(
    uetr: str | None, status: str, reason: str | None = None, original_msg_id: str = "X"
) -> bytes:
    """A pacs.002 from the switch to bank B."""
    global _seq
    _seq += 1
    now = datetime.now(UTC)
    doc = build.status_report(
        msg_id=f"SWCH{_seq:012d}",
        created=now,
        status=status,
        reason=reason,
        original_msg_id=original_msg_id,
        original_uetr=uetr,
        instructing_agent=SWITCH,
        instructed_agent=BANK_B,
    )
    return envelope(SWITCH, BANK_B, MessageType.PACS_002, f"SWCH{_seq:012d}", doc, now)


async def next_out(network: LocalNetwork, timeout: float = 1.0) -> Message:
    """The next message the bank sent to the switch, parsed and checked valid."""
    delivery = await asyncio.wait_for(network.inbox.get(), timeout)
    assert delivery.sender == PID
    msg = parse(delivery.data)
    assert validate(msg) == []
    assert validate(msg, BASE) == []
    return msg


async def nothing_out(network: LocalNetwork, within: float) -> None:
    """Assert the bank sends nothing for `within` seconds."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(network.inbox.get(), within)


def status_of(msg: Message) -> tuple[views.Header, views.StatusReport, views.TxStatus]:
    assert msg.mtype is MessageType.PACS_002
    assert msg.header is not None
    report = views.document_view(msg)
    assert isinstance(report, views.StatusReport)
    (tx,) = report.transactions
    return views.header(msg.header), report, tx


# --- answering as creditor agent ------------------------------------------------------


async def test_accept_answers_acsp(world: World) -> None:
    raw, msg_id, uetr = forwarded("111")
    await world.network.switch.send(PID, raw)
    hdr, report, tx = status_of(await next_out(world.network))
    assert (hdr.from_bicfi, hdr.to_bicfi, hdr.msg_def_idr) == (
        PID,
        "SWCHUS33XXX",
        "pacs.002.001.10",
    )
    assert hdr.biz_msg_idr == report.msg_id
    assert report.msg_id.startswith("BNKB") and len(report.msg_id) <= 35
    assert tx.status == "ACSP"
    assert tx.reasons == ()
    assert (tx.original_msg_id, tx.original_msg_name) == (msg_id, "pacs.008.001.08")
    assert tx.original_uetr == uetr
    assert tx.original_end_to_end_id is not None and tx.original_end_to_end_id.startswith("E2E-")
    assert tx.original_tx_id is not None and tx.original_tx_id.startswith("TX-")
    assert (tx.instructing_agent, tx.instructed_agent) == (BANK_B, SWITCH)
    assert world.bank.counters["answered:ACSP"] == 1


async def test_unlisted_account_is_accepted(world: World) -> None:
    await world.network.switch.send(PID, forwarded("999")[0])
    _, _, tx = status_of(await next_out(world.network))
    assert tx.status == "ACSP"


async def test_reject_answers_rjct_with_reason(world: World) -> None:
    raw, _, uetr = forwarded("222")
    await world.network.switch.send(PID, raw)
    _, _, tx = status_of(await next_out(world.network))
    assert (tx.status, tx.reasons, tx.original_uetr) == ("RJCT", ("AC04",), uetr)
    assert world.bank.counters["answered:RJCT"] == 1


async def test_silent_never_answers(world: World) -> None:
    await world.network.switch.send(PID, forwarded("333")[0])
    await nothing_out(world.network, 0.3)
    assert world.bank.counters["silent"] == 1
    assert world.bank.counters["answered"] == 0


async def test_twice_answers_two_distinct_reports(world: World) -> None:
    raw, _, uetr = forwarded("444")
    await world.network.switch.send(PID, raw)
    h1, r1, t1 = status_of(await next_out(world.network))
    h2, r2, t2 = status_of(await next_out(world.network))
    assert t1.status == t2.status == "ACSP"
    assert t1.original_uetr == t2.original_uetr == uetr
    assert r1.msg_id != r2.msg_id
    assert h1.biz_msg_idr != h2.biz_msg_idr


async def test_late_answers_after_the_timeout_without_blocking_others(world: World) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    late_raw, _, late_uetr = forwarded("555")
    await world.network.switch.send(PID, late_raw)
    raw, _, uetr = forwarded("111")
    await world.network.switch.send(PID, raw)
    _, _, first = status_of(await next_out(world.network, 0.5))
    assert first.original_uetr == uetr
    assert loop.time() - start < 1.0
    await nothing_out(world.network, TIMEOUT + 0.5)
    _, _, late = status_of(await next_out(world.network, 2.0))
    assert (late.status, late.original_uetr) == ("ACSP", late_uetr)
    assert loop.time() - start >= TIMEOUT + 1.0
    assert world.bank.counters["late"] == 1


async def test_stop_drops_pending_late_answers() -> None:
    async with _world() as w:
        await w.network.switch.send(PID, forwarded("555")[0])
        await asyncio.sleep(0.1)
        assert w.bank.counters["late"] == 1
    await asyncio.sleep(TIMEOUT + 1.2)
    assert w.network.inbox.empty()


async def test_redelivered_message_is_answered_once(world: World) -> None:
    raw, _, _ = forwarded("111")
    await world.network.switch.send(PID, raw)
    await world.network.switch.send(PID, raw)
    status_of(await next_out(world.network))
    await nothing_out(world.network, 0.2)
    assert world.bank.counters["duplicate"] == 1


async def test_answers_name_agents_by_member_id() -> None:
    async with _world(name_agents_by="USABA") as w:
        await w.network.switch.send(PID, forwarded("111", creditor_agent=BANK_B_ABA)[0])
        hdr, _, tx = status_of(await next_out(w.network))
        assert (hdr.from_bicfi, hdr.to_bicfi) == (PID, "SWCHUS33XXX")
        assert (tx.instructing_agent, tx.instructed_agent) == (BANK_B_ABA, SWITCH_ABA)
        assert w.bank.counters["misrouted"] == 0


async def test_payment_for_another_bank_is_counted_misrouted(world: World) -> None:
    await world.network.switch.send(PID, forwarded("111", creditor_agent=BANK_A)[0])
    status_of(await next_out(world.network))
    assert world.bank.counters["misrouted"] == 1


async def test_invalid_message_is_recorded_not_answered() -> None:
    raw, _, _ = forwarded("111")
    broken = raw.replace(b"<ChrgBr>SLEV</ChrgBr>", b"<ChrgBr>DEBT</ChrgBr>")
    async with _world(fast=False) as w:
        await w.network.switch.send(PID, broken)
        await nothing_out(w.network, 0.2)
        assert w.bank.counters["invalid"] == 1
        assert "ChrgBr" in w.bank.invalid[0].issues[0]
        await w.network.switch.send(PID, b"<not-xml")
        await nothing_out(w.network, 0.1)
        assert w.bank.counters["unusable"] == 1


# --- paying as debtor agent -----------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "lxml"])
async def test_pay_sends_a_valid_credit_transfer(fast: bool) -> None:
    async with _world(fast=fast) as w:
        sent = await w.bank.pay(
            creditor_agent=BANK_A, amount=Decimal("12.5"), creditor_account="987654321"
        )
        msg = await next_out(w.network)
        assert msg.mtype is MessageType.PACS_008
        assert msg.raw == sent.raw
        assert msg.header is not None
        hdr = views.header(msg.header)
        assert (hdr.from_bicfi, hdr.to_bicfi, hdr.biz_msg_idr) == (PID, "SWCHUS33XXX", sent.msg_id)
        ct = views.document_view(msg)
        assert isinstance(ct, views.CreditTransfer)
        assert ct.msg_id == sent.msg_id
        assert (ct.instructing_agent, ct.instructed_agent) == (BANK_B, BANK_A)
        (tx,) = ct.transactions
        assert (tx.uetr, tx.end_to_end_id, tx.tx_id) == (sent.uetr, sent.end_to_end_id, sent.tx_id)
        assert sent.uetr == sent.uetr.lower() and len(sent.uetr) == 36
        assert tx.amount == views.Amount(value=Decimal("12.50"), currency="USD")
        assert (tx.debtor_agent, tx.creditor_agent) == (BANK_B, BANK_A)
        assert tx.creditor_account == views.Account(other_id="987654321")
        assert len(sent.msg_id) <= 35 and len(sent.tx_id) <= 35
        assert w.bank.counters["sent"] == 1


async def test_pay_without_account_goes_to_the_default_account(world: World) -> None:
    await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("2.00"))
    ct = views.document_view(await next_out(world.network))
    assert isinstance(ct, views.CreditTransfer)
    account = ct.transactions[0].creditor_account
    assert account == views.Account(other_id=DEFAULT_CREDITOR_ACCOUNT)


async def test_pay_by_member_id_to_an_alias() -> None:
    async with _world(name_agents_by="USABA") as w:
        alias = Proxy(type_code=None, type_proprietary="VPA", id="alice@banka")
        await w.bank.pay(creditor_agent=SWITCH_ABA, amount=Decimal("1.00"), proxy=alias)
        ct = views.document_view(await next_out(w.network))
        assert isinstance(ct, views.CreditTransfer)
        (tx,) = ct.transactions
        assert (tx.debtor_agent, tx.creditor_agent) == (BANK_B_ABA, SWITCH_ABA)
        assert tx.creditor_account == views.Account(other_id="NOTPROVIDED", proxy=alias)


async def test_ids_are_unique_and_reusable(world: World) -> None:
    first = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("1"), creditor_account="1")
    second = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("1"), creditor_account="1")
    assert len({first.msg_id, second.msg_id}) == 2
    assert first.uetr != second.uetr
    again = await world.bank.pay(
        creditor_agent=BANK_A,
        amount=Decimal("1"),
        creditor_account="1",
        msg_id=first.msg_id,
        tx_id=first.tx_id,
        end_to_end_id=first.end_to_end_id,
        uetr=first.uetr,
    )
    assert (again.msg_id, again.tx_id, again.uetr) == (first.msg_id, first.tx_id, first.uetr)


async def test_resend_sends_the_same_bytes(world: World) -> None:
    sent = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("3"), creditor_account="1")
    await world.bank.resend(sent.raw)
    one = await asyncio.wait_for(world.network.inbox.get(), 1.0)
    two = await asyncio.wait_for(world.network.inbox.get(), 1.0)
    assert one.data == two.data == sent.raw
    assert world.bank.counters["resent"] == 1


async def test_inquire_sends_a_valid_status_request(world: World) -> None:
    sent = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("3"), creditor_account="1")
    await next_out(world.network)
    msg_id = await world.bank.inquire(sent.uetr, sent.msg_id, original_tx_id=sent.tx_id)
    msg = await next_out(world.network)
    req = views.document_view(msg)
    assert isinstance(req, views.StatusRequest)
    assert req.msg_id == msg_id
    assert (req.instructing_agent, req.instructed_agent) == (BANK_B, SWITCH)
    (tx,) = req.transactions
    assert (tx.original_msg_id, tx.original_uetr, tx.original_tx_id) == (
        sent.msg_id,
        sent.uetr,
        sent.tx_id,
    )


# --- final statuses -------------------------------------------------------------------


async def test_acsc_resolves_wait_final(world: World) -> None:
    sent: SentPayment = await world.bank.pay(
        creditor_agent=BANK_A, amount=Decimal("5"), creditor_account="1"
    )
    waiting = asyncio.create_task(world.bank.wait_final(sent.uetr, 2.0))
    await asyncio.sleep(0.05)
    await world.network.switch.send(PID, from_switch_status(sent.uetr, "ACSC"))
    final = await waiting
    assert final == FinalStatus(uetr=sent.uetr, status="ACSC", reason=None, role=Role.DEBTOR)
    assert world.bank.final(sent.uetr) == final
    assert await world.bank.wait_final(sent.uetr, 0.01) == final


async def test_reject_of_own_payment_is_final_with_reason(world: World) -> None:
    sent = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("5"), creditor_account="1")
    await world.network.switch.send(PID, from_switch_status(sent.uetr, "RJCT", "AB05"))
    final = await world.bank.wait_final(sent.uetr, 1.0)
    assert final is not None
    assert (final.status, final.reason, final.role) == ("RJCT", "AB05", Role.DEBTOR)
    assert world.bank.counters["final:RJCT"] == 1


async def test_reject_without_uetr_is_matched_by_message_id(world: World) -> None:
    sent = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("5"), creditor_account="1")
    raw = from_switch_status(None, "RJCT", "FF01", original_msg_id=sent.msg_id)
    await world.network.switch.send(PID, raw)
    final = await world.bank.wait_final(sent.uetr, 1.0)
    assert final is not None and (final.status, final.reason) == ("RJCT", "FF01")


async def test_accc_is_final_as_creditor(world: World) -> None:
    raw, _, uetr = forwarded("111")
    await world.network.switch.send(PID, raw)
    await next_out(world.network)
    await world.network.switch.send(PID, from_switch_status(uetr, "ACCC"))
    final = await world.bank.wait_final(uetr, 1.0)
    assert final == FinalStatus(uetr=uetr, status="ACCC", reason=None, role=Role.CREDITOR)


async def test_interim_status_is_not_final(world: World) -> None:
    sent = await world.bank.pay(creditor_agent=BANK_A, amount=Decimal("5"), creditor_account="1")
    await world.network.switch.send(PID, from_switch_status(sent.uetr, "PDNG"))
    assert await world.bank.wait_final(sent.uetr, 0.2) is None
    assert world.bank.latest_status(sent.uetr) == ("PDNG", None)
    assert world.bank.counters["status:PDNG"] == 1


async def test_wait_final_times_out_with_none(world: World) -> None:
    assert await world.bank.wait_final("0f0f0f0f-0000-4000-8000-000000000000", 0.05) is None


async def test_message_reject_is_recorded(world: World) -> None:
    doc = build.message_reject(
        reference="BNKB000000000001",
        reason="late answer",
        rejected_at=datetime.now(UTC),
        description="the payment timed out before this answer",
    )
    raw = envelope(SWITCH, BANK_B, MessageType.ADMI_002, "SWCH-R1", doc, datetime.now(UTC))
    await world.network.switch.send(PID, raw)
    for _ in range(50):
        if world.bank.rejects:
            break
        await asyncio.sleep(0.01)
    (reject,) = world.bank.rejects
    assert reject.reference == "BNKB000000000001"
    assert world.bank.counters["rejects"] == 1


# --- behaviours -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action", "reason"),
    [
        ("accept", Action.ACCEPT, None),
        ("reject:AC03", Action.REJECT, "AC03"),
        ("reject:AC04", Action.REJECT, "AC04"),
        (" Reject:ac06 ", Action.REJECT, "AC06"),
        ("reject:NARR", Action.REJECT, "NARR"),
        ("late", Action.LATE, None),
        ("silent", Action.SILENT, None),
        ("twice", Action.TWICE, None),
    ],
)
def test_behaviour_parse(text: str, action: Action, reason: str | None) -> None:
    b = Behaviour.parse(text)
    assert (b.action, b.reason) == (action, reason)
    assert Behaviour.parse(str(b)) == b


@pytest.mark.parametrize("text", ["acept", "reject", "reject:", "reject:AC0", "late:AB05", ""])
def test_behaviour_parse_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="behaviour") as info:
        Behaviour.parse(text)
    assert repr(text) in str(info.value)


def test_bank_parses_behaviour_strings_and_default() -> None:
    network = LocalNetwork()
    bank = SimulatedBank(
        bicfi=PID,
        member_id="021000021",
        name="Bank B",
        channel=network.connect(PID),
        behaviours={"222": "reject:AC04", "*": Behaviour(action=Action.SILENT)},
    )
    assert bank.behaviour("222") == Behaviour(action=Action.REJECT, reason="AC04")
    assert bank.behaviour("unlisted") == Behaviour(action=Action.SILENT)
    with pytest.raises(ValueError, match="nope"):
        SimulatedBank(
            bicfi=PID,
            member_id="021000021",
            name="Bank B",
            channel=network.connect(PID),
            behaviours={"1": "nope"},
        )


# --- fast readers agree with the typed views ------------------------------------------

P002 = MessageType.PACS_002.namespace
MULTI_STATUS = f"""<Document xmlns="{P002}"><FIToFIPmtStsRpt>
<GrpHdr><MsgId>SW1</MsgId><CreDtTm>2026-11-21T14:03:11.123Z</CreDtTm></GrpHdr>
<OrgnlGrpInfAndSts><OrgnlMsgId>GROUP-MSG</OrgnlMsgId><OrgnlMsgNmId>pacs.008.001.08</OrgnlMsgNmId>
</OrgnlGrpInfAndSts>
<TxInfAndSts><OrgnlUETR>a41c7e90-2b6d-4f13-9e58-c07d3b1fa62e</OrgnlUETR><TxSts>RJCT</TxSts>
<StsRsnInf><AddtlInf>no code here</AddtlInf></StsRsnInf>
<StsRsnInf><Rsn><Prtry>X123</Prtry></Rsn></StsRsnInf>
<StsRsnInf><Rsn><Cd>AC04</Cd></Rsn></StsRsnInf></TxInfAndSts>
<TxInfAndSts><OrgnlGrpInf><OrgnlMsgId>OWN-MSG</OrgnlMsgId><OrgnlMsgNmId>pacs.008.001.08</OrgnlMsgNmId>
</OrgnlGrpInf><TxSts>ACSC</TxSts></TxInfAndSts>
</FIToFIPmtStsRpt></Document>""".encode()


def test_status_reader_takes_the_group_reference_when_a_status_has_none() -> None:
    msg = parse(MULTI_STATUS)
    assert validate(msg) == []
    assert msg.document is not None
    assert bank_module.fast_read(MULTI_STATUS) is None  # not the canonical shape
    read = bank_module._view_statuses(msg.document)
    assert [(s.msg_id, s.status, s.reason) for s in read] == [
        ("GROUP-MSG", "RJCT", "X123"),
        ("OWN-MSG", "ACSC", None),
    ]


@pytest.mark.parametrize(
    ("agent", "account"),
    [
        (BANK_B, "111"),
        (Agent(bicfi=PID, member_id="021000021", clearing_system=USABA), "222"),
        (BANK_B_ABA, None),
    ],
)
def test_payment_reader(agent: Agent, account: str | None) -> None:
    raw, msg_id, uetr = forwarded(account or "x", creditor_agent=agent)
    if account is None:
        raw = raw.replace(b"<Othr><Id>x</Id></Othr>", b"<IBAN>US12BANK0000000001</IBAN>")
    msg = parse(raw)
    assert validate(msg) == []
    assert msg.document is not None
    (p,) = bank_module._view_payments(msg.document)
    assert (p.msg_id, p.uetr) == (msg_id, uetr)
    assert p.account == (account or "US12BANK0000000001")
    assert (p.creditor_bicfi, p.creditor_member_id) == (agent.bicfi, agent.member_id)


@pytest.mark.parametrize(
    ("agent", "account"),
    [
        (BANK_B, "111"),
        (Agent(bicfi=PID, member_id="021000021", clearing_system=USABA), "222"),
        (BANK_B_ABA, None),
    ],
)
def test_tree_free_reader_agrees_with_the_view_on_payments(
    agent: Agent, account: str | None
) -> None:
    raw, _, _ = forwarded(account or "x", creditor_agent=agent)
    if account is None:
        raw = raw.replace(b"<Othr><Id>x</Id></Othr>", b"<IBAN>US12BANK0000000001</IBAN>")
    msg = parse(raw)
    assert msg.document is not None
    quick = bank_module.fast_read(raw)
    assert quick is not None
    assert quick[1] is MessageType.PACS_008
    assert quick[2] == bank_module._view_payments(msg.document)


@pytest.mark.parametrize(("status", "reason"), [("ACSC", None), ("RJCT", "AB05")])
def test_tree_free_reader_agrees_with_the_view_on_statuses(status: str, reason: str | None) -> None:
    raw = from_switch_status("7b0b5e7c-4a1f-4c8e-9d2b-1f3e5a6b7c8d", status, reason, "ORIG-1")
    msg = parse(raw)
    assert msg.document is not None
    quick = bank_module.fast_read(raw)
    assert quick is not None
    assert quick[2] == bank_module._view_statuses(msg.document)


def test_tree_free_reader_falls_back_on_other_shapes() -> None:
    assert bank_module.fast_read(MULTI_STATUS) is None
    raw = from_switch_status("7b0b5e7c-4a1f-4c8e-9d2b-1f3e5a6b7c8d", "ACSC")
    prefixed = raw.replace(b'<Document xmlns="', b'<p:Document xmlns:p="')
    assert bank_module.fast_read(prefixed) is None
    escaped = raw.replace(b"<OrgnlMsgId>X<", b"<OrgnlMsgId>X&amp;Y<")
    assert bank_module.fast_read(escaped) is None
