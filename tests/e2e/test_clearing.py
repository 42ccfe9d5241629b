"""The credit transfer flow of RULEBOOK §3 and the reject reasons of §4, driven as banks would.

Every test runs on SQLite and on PostgreSQL. Each bad-input case sends the offending
message, checks the reason code on the wire, that no money moved, and that the message
was archived.
"""

from __future__ import annotations

import asyncio

import pytest

from switch.core import PaymentState
from switch.engine import Engine, _Reading
from switch.inbound import Inbound
from switch.iso20022 import views
from switch.iso20022.views import Agent
from switch.transport import Delivery
from tests.e2e.conftest import (
    OPENING,
    A,
    B,
    C,
    S,
    Switch,
    pacs002,
    pacs008,
    pacs028,
    status_of,
)

OPEN = int(OPENING * 100)


async def test_accepted_payment_settles_and_both_agents_hear(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B, amount="250.00"))
    fwd = await switch.receive(B)
    assert isinstance(fwd.view, views.CreditTransfer)
    assert fwd.header.from_bicfi == "SWCHUS33XXX" and fwd.header.to_bicfi == B
    assert switch.engine.book.position(A).reserved == 25000
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    assert status_of(await switch.receive(A)) == ("ACSC", ())
    assert status_of(await switch.receive(B)) == ("ACCC", ())
    assert switch.available(A) == OPEN - 25000
    assert switch.available(B) == OPEN + 25000
    assert switch.engine.book.position(A).reserved == 0
    assert (await switch.store.conservation()).ok


async def test_creditor_reject_is_passed_through_and_releases(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B, amount="99.99"))
    fwd = await switch.receive(B)
    await switch.send(B, pacs002(B, fwd, "RJCT", "AC04"))
    assert status_of(await switch.receive(A)) == ("RJCT", ("AC04",))
    assert switch.available(A) == OPEN
    assert switch.engine.book.position(A).reserved == 0


async def test_timeout_rejects_to_both_and_late_answer_changes_nothing(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B, amount="5.00"))
    fwd = await switch.receive(B)
    assert status_of(await switch.receive(A, timeout=3)) == ("RJCT", ("AB05",))
    assert status_of(await switch.receive(B, timeout=3)) == ("RJCT", ("AB05",))
    assert switch.available(A) == OPEN
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    late = await switch.receive(B)
    assert isinstance(late.view, views.MessageReject)
    assert "timed_out" in (late.view.description or "")
    await switch.nothing_for(A)
    assert switch.available(A) == OPEN and switch.available(B) == OPEN


async def test_an_answer_after_the_deadline_is_late_even_in_the_same_batch(
    switch: Switch,
) -> None:
    await switch.send(A, pacs008(A, B, amount="7.00"))
    fwd = await switch.receive(B)
    await switch.halt()
    await asyncio.sleep(switch.settings.response_timeout + 0.2)
    # The answer and the due deadline reach the engine together, in its first batch.
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    await switch.start()
    assert status_of(await switch.receive(A)) == ("RJCT", ("AB05",))
    assert status_of(await switch.receive(B)) == ("RJCT", ("AB05",))
    late = await switch.receive(B)
    assert isinstance(late.view, views.MessageReject)
    assert switch.available(A) == OPEN and switch.available(B) == OPEN


async def test_second_answer_gets_admi002(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B))
    fwd = await switch.receive(B)
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    await switch.receive(A)
    await switch.receive(B)
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    again = await switch.receive(B)
    assert isinstance(again.view, views.MessageReject)
    assert switch.available(B) == OPEN + 1000


async def test_answer_from_a_bank_that_is_not_the_creditor_agent(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B))
    fwd = await switch.receive(B)
    await switch.send(C, pacs002(C, fwd, "ACSP"))
    wrong = await switch.receive(C)
    assert isinstance(wrong.view, views.MessageReject) and wrong.view.reason == "RC01"
    assert switch.engine.book.position(A).reserved == 1000


async def test_status_inquiry_from_either_agent(switch: Switch) -> None:
    raw = pacs008(A, B)
    await switch.send(A, raw)
    fwd = await switch.receive(B)
    assert isinstance(fwd.view, views.CreditTransfer)
    uetr = fwd.view.transactions[0].uetr
    assert uetr is not None
    await switch.send(A, pacs028(A, uetr, fwd.view.msg_id))
    assert status_of(await switch.receive(A)) == ("PDNG", ())
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    await switch.receive(A)
    await switch.receive(B)
    await switch.send(B, pacs028(B, uetr, fwd.view.msg_id))
    assert status_of(await switch.receive(B)) == ("ACCC", ())
    await switch.send(C, pacs028(C, uetr, fwd.view.msg_id))
    assert isinstance((await switch.receive(C)).view, views.MessageReject)


async def test_agents_named_by_member_id_are_answered_in_kind(switch: Switch) -> None:
    raw = pacs008(
        A,
        B,
        debtor_agent=Agent(member_id="021000021", clearing_system="USABA"),
        creditor_agent=Agent(member_id="011000015", clearing_system="USABA"),
    )
    await switch.send(A, raw)
    fwd = await switch.receive(B)
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    answer = await switch.receive(A)
    assert isinstance(answer.view, views.StatusReport)
    st = answer.view.transactions[0]
    assert st.status == "ACSC"
    assert st.instructed_agent == Agent(member_id="021000021", clearing_system="USABA")
    assert st.instructing_agent == Agent(member_id="000000000", clearing_system="USABA")


# --- bad input: one test per rule, reason on the wire, no money moved, archived -----------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("schema", "FF01"),
        ("currency", "AM03"),
        ("not_debtor_agent", "RC01"),
        ("over_limit", "AM02"),
        ("insufficient", "AM04"),
        ("unknown_creditor", "RC04"),
        ("alias_unknown", "BE23"),
        ("debtor_suspended", "AG01"),
        ("creditor_suspended", "AB08"),
        ("three_decimals", "FF01"),
    ],
)
async def test_rejected_before_forwarding(switch: Switch, case: str, reason: str) -> None:
    sender = A
    raw = {
        "schema": lambda: pacs008(A, B).replace(b"<ChrgBr>SLEV<", b"<ChrgBr>DEBT<"),
        "currency": lambda: pacs008(A, B, currency="EUR"),
        "not_debtor_agent": lambda: pacs008(B, C, sender=A),
        "over_limit": lambda: pacs008(A, B, amount="1000000.01"),
        "insufficient": lambda: pacs008(A, B, amount="1000.01"),
        "unknown_creditor": lambda: pacs008(A, "BNKZUS33XXX"),
        "alias_unknown": lambda: pacs008(A, "SWCHUS33XXX"),
        "debtor_suspended": lambda: pacs008(S, B),
        "creditor_suspended": lambda: pacs008(A, S),
        "three_decimals": lambda: pacs008(A, B, amount="1.005"),
    }[case]()
    if case == "debtor_suspended":
        sender = S
    before = {p: switch.engine.book.position(p) for p in (A, B, C, S)}
    archived = await switch.archived_inbound()
    await switch.send(sender, raw)
    answer = await switch.receive(sender)
    assert status_of(answer)[0] == "RJCT"
    assert status_of(answer)[1] == (reason,)
    for p in (A, B, C, S):
        if p != sender:
            await switch.nothing_for(p, 0.05)
        assert switch.engine.book.position(p) == before[p]
    assert await switch.archived_inbound() == archived + 1
    assert (await switch.store.conservation()).ok


@pytest.mark.parametrize(
    "dup",
    ["msg_id", "uetr", "e2e_tx"],
)
async def test_duplicates_are_rejected_and_move_no_money(switch: Switch, dup: str) -> None:
    uetr = "5b3e1c9a-2f4d-4a6b-8c7d-9e0f1a2b3c4d"
    first = pacs008(A, B, msg_id="MSG-1", uetr=uetr, e2e="E1", tx_id="T1")
    await switch.send(A, first)
    fwd = await switch.receive(B)
    second = {
        "msg_id": pacs008(A, B, msg_id="MSG-1"),
        "uetr": pacs008(A, B, uetr=uetr),
        "e2e_tx": pacs008(A, B, e2e="E1", tx_id="T1"),
    }[dup]
    await switch.send(A, second)
    assert status_of(await switch.receive(A)) == ("RJCT", ("DUPL",))
    await switch.nothing_for(B, 0.1)
    assert switch.engine.book.position(A).reserved == 1000
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    assert status_of(await switch.receive(A)) == ("ACSC", ())
    assert switch.available(A) == OPEN - 1000


async def test_byte_identical_resend_gets_the_same_answer(switch: Switch) -> None:
    raw = pacs008(A, "BNKZUS33XXX")
    await switch.send(A, raw)
    first = await switch.receive(A)
    await switch.send(A, raw)
    second = await switch.receive(A)
    assert second.raw == first.raw
    ok = pacs008(A, B)
    await switch.send(A, ok)
    fwd = await switch.receive(B)
    await switch.send(B, pacs002(B, fwd, "ACSP"))
    settled = await switch.receive(A)
    await switch.receive(B)
    await switch.send(A, ok)
    assert (await switch.receive(A)).raw == settled.raw
    await switch.nothing_for(B)
    assert switch.available(A) == OPEN - 1000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "unusable"),
        (b"<not-xml", "unusable"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "unusable"),
        (b'<Document xmlns="urn:example:invoice"/>', "unusable"),
    ],
)
async def test_unusable_input_gets_admi002(switch: Switch, raw: bytes, reason: str) -> None:
    await switch.send(A, raw)
    answer = await switch.receive(A)
    assert isinstance(answer.view, views.MessageReject)
    assert answer.view.reason == reason
    assert answer.view.description


async def test_header_sender_must_be_the_channel_sender(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B))
    fwd = await switch.receive(B)
    await switch.send(C, pacs002(B, fwd, "ACSP"))
    answer = await switch.receive(C)
    assert isinstance(answer.view, views.MessageReject) and answer.view.reason == "RC01"


async def test_deadlines_survive_a_restart(switch: Switch) -> None:
    await switch.send(A, pacs008(A, B, amount="7.00"))
    await switch.receive(B)
    await switch.halt()
    # A new engine on the same store: the payment is still forwarded, its deadline durable.
    switch.engine = Engine(
        settings=switch.settings, store=switch.store, transport=switch.network.switch
    )
    await switch.start()
    assert status_of(await switch.receive(A, timeout=3)) == ("RJCT", ("AB05",))
    assert status_of(await switch.receive(B, timeout=3)) == ("RJCT", ("AB05",))
    assert switch.available(A) == OPEN
    state = await switch.store.load_state()
    assert [p.state for p in state.payments] == [PaymentState.TIMED_OUT]


async def test_many_payments_in_one_batch_net_once(switch: Switch) -> None:
    # 160 messages arrive before the engine looks: one batch, read off the event loop.
    n = 80
    raws = [pacs008(A, B, amount="1.00") for _ in range(n)]
    raws += [pacs008(B, A, amount="2.00") for _ in range(n)]
    for i, raw in enumerate(raws):
        await switch.send(A if i < n else B, raw)
    forwarded = [await switch.receive(B) for _ in range(n)] + [
        await switch.receive(A) for _ in range(n)
    ]
    batches = switch.engine.stats.batches
    for i, fwd in enumerate(forwarded):
        await switch.send(B if i < n else A, pacs002(B if i < n else A, fwd, "ACSP"))
    await asyncio.sleep(0.5)
    assert switch.available(A) == OPEN - 100 * n + 200 * n
    assert switch.available(B) == OPEN + 100 * n - 200 * n
    assert (await switch.store.conservation()).ok
    assert switch.engine.stats.settled == 2 * n
    assert switch.engine.stats.batches - batches <= 4  # the answers committed in few batches


async def test_batches_are_decided_in_the_order_they_arrived(switch: Switch) -> None:
    # A large batch is in a reader process; a small one that arrived after it is read
    # already, yet decided after it: the reuse of ORDER-1 is the duplicate.
    await switch.halt()
    engine = switch.engine = Engine(
        settings=switch.settings, store=switch.store, transport=switch.network.switch
    )
    await engine.start()
    large = [Delivery(A, pacs008(A, B, amount="1.00")) for _ in range(129)]
    large.append(Delivery(A, pacs008(A, B, msg_id="ORDER-1", amount="1.00")))
    engine._start_reading(large)
    small = [Delivery(A, pacs008(A, B, msg_id="ORDER-1", amount="3.00"))]
    read: asyncio.Future[list[Inbound]] = asyncio.get_running_loop().create_future()
    read.set_result(engine._read_here(small))
    engine._reading.append(_Reading(small, read, 0.0))
    assert [r.prepared.done() for r in engine._reading] == [False, True]
    stop = asyncio.Event()
    stop.set()
    await engine.run(stop)  # at stop, what was received is decided and committed
    assert not engine._reading
    forwarded = [await switch.receive(B) for _ in range(130)]
    amounts = {
        str(f.view.transactions[0].amount.value)
        for f in forwarded
        if isinstance(f.view, views.CreditTransfer)
    }
    assert amounts == {"1.00"}
    assert status_of(await switch.receive(A)) == ("RJCT", ("DUPL",))
    assert engine.book.position(A).reserved == 130 * 100


async def test_agent_named_by_neither_bicfi_nor_member_id_is_rejected(switch: Switch) -> None:
    # Schema-valid (every FinInstnId child is optional) but not clearable: no crash, a reject.
    raw = pacs008(A, B).replace(
        b"<CdtrAgt><FinInstnId><BICFI>BNKBUS33XXX</BICFI></FinInstnId></CdtrAgt>",
        b"<CdtrAgt><FinInstnId><Nm>Some Bank</Nm></FinInstnId></CdtrAgt>",
    )
    assert b"<Nm>Some Bank</Nm>" in raw
    await switch.send(A, raw)
    assert status_of(await switch.receive(A)) == ("RJCT", ("FF01",))
    assert switch.available(A) == OPEN
    await switch.send(A, pacs008(A, B))  # the switch is still clearing
    assert isinstance((await switch.receive(B)).view, views.CreditTransfer)


async def test_header_missing_a_mandatory_element_is_rejected(switch: Switch) -> None:
    raw = pacs008(A, B)
    start = raw.index(b"<BizMsgIdr>")
    end = raw.index(b"</BizMsgIdr>") + len(b"</BizMsgIdr>")
    await switch.send(A, raw[:start] + raw[end:])
    assert status_of(await switch.receive(A)) == ("RJCT", ("FF01",))
    await switch.nothing_for(B)
    assert switch.available(A) == OPEN
