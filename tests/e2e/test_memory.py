"""Bounded memory: the engine keeps the recent final payments only, and recalls the rest.

A switch that runs 24x7 cannot hold its whole history in memory, nor load it at every
start. The engine keeps the payments in flight and the `engine.recent_payments` most
recent final ones (with their message ids and inbound hashes); a message that refers to
an older payment is decided exactly as if it were still in memory, from the store. Here
the bound is tiny (16, batches of 4), so that a few dozen payments push the first ones
out, and every rule that looks at earlier payments is driven again: duplicates by
message id, UETR and transaction, a byte-identical resend, a status inquiry, a late
answer. A restart loads only the payments in flight and answers the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from switch.core import PaymentState
from switch.engine import Engine
from switch.iso20022 import views
from switch.settings import load_settings
from tests.e2e.conftest import (
    OPENING,
    A,
    B,
    C,
    Received,
    Switch,
    pacs002,
    pacs008,
    pacs028,
    running_switch,
    status_of,
)

OPEN = int(OPENING * 100)
RECENT = 16
BATCH = 4


@pytest.fixture
async def small(store_url: str) -> AsyncIterator[Switch]:
    """A running switch that keeps at most `RECENT` final payments in memory."""
    settings = load_settings(store=store_url, response_timeout=2.0)
    settings = replace(
        settings, engine=replace(settings.engine, batch_size=BATCH, recent_payments=RECENT)
    )
    async with running_switch(settings) as sw:
        yield sw


async def settle(sw: Switch, raws: list[bytes]) -> list[tuple[Received, Received]]:
    """Send `raws` (pacs.008 from A to B), have B accept each: (forwarded, ACSC) of each."""
    for raw in raws:
        await sw.send(A, raw)
    forwarded = [await sw.receive(B) for _ in raws]
    for fwd in forwarded:
        await sw.send(B, pacs002(B, fwd, "ACSP"))
    settled = []
    for _ in raws:
        settled.append(await sw.receive(A))
        assert status_of(await sw.receive(B)) == ("ACCC", ())
    return list(zip(forwarded, settled, strict=True))


def uetr_of(fwd: Received) -> str:
    assert isinstance(fwd.view, views.CreditTransfer)
    uetr = fwd.view.transactions[0].uetr
    assert uetr is not None
    return uetr


async def push_out(sw: Switch, first: Received) -> None:
    """Clear enough payments after `first` that it leaves the engine's memory."""
    await settle(sw, [pacs008(A, B, amount="1.00") for _ in range(RECENT + 2 * BATCH)])
    await settle(sw, [pacs008(A, B, amount="1.00")])  # a batch after them: evicted by now
    assert uetr_of(first) not in sw.engine.by_uetr


async def test_memory_holds_the_recent_payments_only(small: Switch) -> None:
    await settle(small, [pacs008(A, B, amount="1.00") for _ in range(3 * RECENT)])
    engine = small.engine
    # What the last batches finalized may wait for the next batch to be evicted.
    assert len(engine.payments) <= RECENT + 2 * BATCH
    assert len(engine.by_uetr) == len(engine.payments) == len(engine.e2e_keys)
    assert len(engine.msg_ids) <= RECENT + 2 * BATCH
    assert len(engine.hashes) <= 2 * RECENT + 2 * BATCH
    assert len((await small.store.load_state()).payments) == 3 * RECENT
    assert small.available(B) == OPEN + 3 * RECENT * 100
    assert (await small.store.conservation()).ok


@pytest.mark.parametrize("dup", ["msg_id", "uetr", "e2e_tx"])
async def test_an_evicted_payment_is_still_a_duplicate(small: Switch, dup: str) -> None:
    uetr = "0c6f5a3e-7d1b-4c2a-9e8f-1a2b3c4d5e6f"
    [(fwd, _)] = await settle(
        small, [pacs008(A, B, msg_id="OLD-1", uetr=uetr, e2e="E1", tx_id="T1")]
    )
    await push_out(small, fwd)
    before = small.available(A), small.available(B)
    again = {
        "msg_id": pacs008(A, B, msg_id="OLD-1"),
        "uetr": pacs008(A, B, uetr=uetr),
        "e2e_tx": pacs008(A, B, e2e="E1", tx_id="T1"),
    }[dup]
    await small.send(A, again)
    assert status_of(await small.receive(A)) == ("RJCT", ("DUPL",))
    await small.nothing_for(B, 0.1)
    assert (small.available(A), small.available(B)) == before
    assert small.engine.book.position(A).reserved == 0


async def test_an_evicted_payment_answers_resends_inquiries_and_late_answers(
    small: Switch,
) -> None:
    raw = pacs008(A, B, amount="5.00")
    [(fwd, settled)] = await settle(small, [raw])
    await push_out(small, fwd)
    uetr = uetr_of(fwd)
    assert isinstance(fwd.view, views.CreditTransfer)
    before = small.available(A), small.available(B)
    # The same bytes again: the same answer again, nothing forwarded, nothing moved.
    await small.send(A, raw)
    assert (await small.receive(A)).raw == settled.raw
    await small.nothing_for(B, 0.1)
    # Status inquiries from either agent, and a refusal for a third bank.
    await small.send(A, pacs028(A, uetr, fwd.view.msg_id))
    assert status_of(await small.receive(A)) == ("ACSC", ())
    await small.send(B, pacs028(B, uetr, fwd.view.msg_id))
    assert status_of(await small.receive(B)) == ("ACCC", ())
    await small.send(C, pacs028(C, uetr, fwd.view.msg_id))
    refused = await small.receive(C)
    assert isinstance(refused.view, views.MessageReject) and refused.view.reason == "unknown"
    # A second answer from the creditor agent: late, changes nothing.
    await small.send(B, pacs002(B, fwd, "RJCT", "AC04"))
    late = await small.receive(B)
    assert isinstance(late.view, views.MessageReject) and late.view.reason == "late"
    await small.nothing_for(A, 0.1)
    assert (small.available(A), small.available(B)) == before
    assert (await small.store.conservation()).ok


async def test_a_restart_loads_the_payments_in_flight_only(small: Switch) -> None:
    raw = pacs008(A, B, msg_id="BEFORE-RESTART", amount="3.00")
    [(fwd, settled)] = await settle(small, [raw])
    await small.send(A, pacs008(A, B, amount="2.00"))
    open_fwd = await small.receive(B)
    await small.halt()
    small.engine = Engine(
        settings=small.settings, store=small.store, transport=small.network.switch
    )
    await small.start()
    assert [p.state for p in small.engine.payments.values()] == [PaymentState.FORWARDED]
    assert not small.engine.msg_ids and not small.engine.hashes
    # The earlier payment is known all the same.
    await small.send(A, raw)
    assert (await small.receive(A)).raw == settled.raw
    await small.send(A, pacs008(A, B, msg_id="BEFORE-RESTART"))
    assert status_of(await small.receive(A)) == ("RJCT", ("DUPL",))
    await small.send(A, pacs028(A, uetr_of(fwd), "BEFORE-RESTART"))
    assert status_of(await small.receive(A)) == ("ACSC", ())
    # And the one in flight settles.
    await small.send(B, pacs002(B, open_fwd, "ACSP"))
    assert status_of(await small.receive(A)) == ("ACSC", ())
    assert status_of(await small.receive(B)) == ("ACCC", ())
    assert small.available(B) == OPEN + 500
    assert (await small.store.conservation()).ok
