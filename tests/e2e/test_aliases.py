"""Paying an alias and looking one up, end to end (RULEBOOK §5), on SQLite and PostgreSQL.

The banks register aliases through the directory service (a second `DirectoryService` on
the same store stands for another process, such as the participant API), then pay them
with pacs.008 `CdtrAcct/Prxy` and ask about them with acmt.023.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from prometheus_client import REGISTRY

from participants.messages import (
    alias_proxy,
    credit_transfer,
    envelope,
    identification_verification_request,
)
from switch.core.money import to_minor
from switch.directory import AliasType
from switch.directory_service import DirectoryService
from switch.engine import IdGenerator
from switch.iso20022 import MessageType, views
from switch.iso20022.views import Agent
from switch.store.base import Batch, Store
from tests.e2e.conftest import (
    BANKS,
    OPENING,
    SWITCH,
    A,
    B,
    C,
    Received,
    Switch,
    pacs002,
    pacs008,
    status_of,
)

SWITCH_BY_MEMBER = Agent(member_id="000000000", clearing_system="USABA")


def pay_alias(
    kind: str,
    value: str,
    *,
    debtor: str = A,
    creditor_agent: Agent = SWITCH,
    amount: str = "10.00",
    named_by_member: bool = False,
) -> bytes:
    """A pacs.008 from `debtor` paying alias (`kind`, `value`) via `creditor_agent`."""
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    debtor_agent = Agent(bicfi=debtor)
    if named_by_member:
        debtor_agent = Agent(member_id=BANKS[debtor][0], clearing_system="USABA")
    doc = credit_transfer(
        msg_id=f"M{n}",
        created=now,
        uetr=str(uuid4()),
        end_to_end_id=f"E{n}",
        tx_id=f"T{n}",
        amount=Decimal(amount),
        currency="USD",
        debtor_agent=debtor_agent,
        creditor_agent=creditor_agent,
        debtor_name="Alice Payer",
        debtor_account="000111222",
        creditor_name="Bob Payee",
        creditor_account=None,
        creditor_proxy=alias_proxy(kind, value),
        settlement_date=date(2026, 11, 21),
    )
    return envelope(Agent(bicfi=debtor), SWITCH, MessageType.PACS_008, f"H{n}", doc, now)


def lookup(kind: str, value: str, *, asker: str = A, end_user: str | None = None) -> bytes:
    """An acmt.023 from `asker` asking who owns alias (`kind`, `value`)."""
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    doc = identification_verification_request(
        msg_id=f"L{n}",
        created=now,
        alias_type=kind,
        alias=value,
        assigner=Agent(bicfi=asker),
        end_user=end_user,
    )
    return envelope(Agent(bicfi=asker), SWITCH, MessageType.ACMT_023, f"H{n}", doc, now)


def other_process(store: Store, period: timedelta = timedelta(days=7)) -> DirectoryService:
    """A directory service on the same store, as another process (the API) would hold."""
    return DirectoryService(
        store,
        clock=lambda: datetime.now(UTC),
        claim_period=period,
        claim_ids=IdGenerator("CLT"),
    )


def forwarded_creditor(r: Received) -> tuple[Agent, str | None, views.Proxy | None]:
    """(CdtrAgt, CdtrAcct/Id/Othr/Id, CdtrAcct/Prxy) of a forwarded pacs.008."""
    assert isinstance(r.view, views.CreditTransfer), r.raw[:300]
    tx = r.view.transactions[0]
    assert tx.creditor_account is not None
    return tx.creditor_agent, tx.creditor_account.other_id, tx.creditor_account.proxy


async def register(
    sw: Switch, owner: str, kind: AliasType, value: str | None, account: str, name: str
) -> str:
    alias = await sw.engine.directory.register(
        participant=owner, kind=kind, value=value, account=account, name=name
    )
    return alias.value


async def test_a_payment_to_an_alias_is_forwarded_to_its_owner_and_settles(sw: Switch) -> None:
    await register(sw, B, AliasType.VPA, "bob@bankb", "987654321", "Bob Jones")
    await sw.send(A, pay_alias("VPA", "bob@bankb"))
    fwd = await sw.receive(B)
    agent, account, proxy = forwarded_creditor(fwd)
    assert agent.bicfi == B and account == "987654321"
    assert proxy is not None and proxy.id == "bob@bankb"
    assert b"NOTPROVIDED" not in fwd.raw
    await sw.send(B, pacs002(B, fwd, "ACSP"))
    assert status_of(await sw.receive(A))[0] == "ACSC"
    assert status_of(await sw.receive(B))[0] == "ACCC"
    assert sw.available(B) == to_minor(OPENING + Decimal("10.00"))


async def test_the_owner_is_named_in_kind(sw: Switch) -> None:
    await register(sw, C, AliasType.TELE, "+1 (555) 010-2030", "555", "Carol King")
    await sw.send(A, pay_alias("TELE", "+15550102030", creditor_agent=SWITCH_BY_MEMBER))
    agent, account, _ = forwarded_creditor(await sw.receive(C))
    assert agent.bicfi is None and agent.member_id == BANKS[C][0] and account == "555"


async def test_e_mail_aliases_are_matched_normalised(sw: Switch) -> None:
    await register(sw, B, AliasType.EMAL, "Bob.Jones@Example.com", "42", "Bob Jones")
    await sw.send(A, pay_alias("EMAL", "bob.jones@EXAMPLE.COM"))
    assert forwarded_creditor(await sw.receive(B))[1] == "42"


async def test_naming_the_owner_itself_is_accepted(sw: Switch) -> None:
    await register(sw, B, AliasType.VPA, "bob@bankb", "1", "Bob Jones")
    await sw.send(A, pay_alias("VPA", "bob@bankb", creditor_agent=Agent(bicfi=B)))
    assert forwarded_creditor(await sw.receive(B))[0].bicfi == B


@pytest.mark.parametrize("setup", ["unknown", "inactive", "deleted"])
async def test_an_alias_that_cannot_be_paid_is_rejected_be23(sw: Switch, setup: str) -> None:
    if setup != "unknown":
        await register(sw, B, AliasType.VPA, "bob@bankb", "1", "Bob Jones")
        if setup == "inactive":
            await sw.engine.directory.set_active(
                participant=B, kind=AliasType.VPA, value="bob@bankb", active=False
            )
        else:
            await sw.engine.directory.delete(participant=B, kind=AliasType.VPA, value="bob@bankb")
    before = sw.available(A)
    archived = await sw.archived_inbound()
    await sw.send(A, pay_alias("VPA", "bob@bankb"))
    assert status_of(await sw.receive(A)) == ("RJCT", ("BE23",))
    await sw.nothing_for(B)
    assert sw.available(A) == before
    assert await sw.archived_inbound() == archived + 1


async def test_a_creditor_agent_that_is_not_the_owner_is_rejected(sw: Switch) -> None:
    await register(sw, B, AliasType.VPA, "bob@bankb", "1", "Bob Jones")
    before = sw.available(A)
    await sw.send(A, pay_alias("VPA", "bob@bankb", creditor_agent=Agent(bicfi=C)))
    assert status_of(await sw.receive(A)) == ("RJCT", ("RC04",))
    await sw.nothing_for(C)
    await sw.nothing_for(B)
    assert sw.available(A) == before


async def test_a_change_made_elsewhere_is_seen_by_the_very_next_payment(sw: Switch) -> None:
    api = other_process(sw.store)
    await api.start()
    await api.register(
        participant=B, kind=AliasType.VPA, value="bob@bankb", account="111", name="Bob Jones"
    )
    await sw.send(A, pay_alias("VPA", "bob@bankb"))
    assert forwarded_creditor(await sw.receive(B))[1] == "111"
    await api.update(participant=B, kind=AliasType.VPA, value="bob@bankb", account="222")
    await sw.send(A, pay_alias("VPA", "bob@bankb"))
    assert forwarded_creditor(await sw.receive(B))[1] == "222"
    await api.delete(participant=B, kind=AliasType.VPA, value="bob@bankb")
    await sw.send(A, pay_alias("VPA", "bob@bankb"))
    assert status_of(await sw.receive(A)) == ("RJCT", ("BE23",))


def report_of(r: Received) -> views.VerificationReport:
    assert isinstance(r.view, views.IdentificationVerificationReport), r.raw[:300]
    (report,) = r.view.reports
    return report


async def test_a_lookup_returns_the_owner_and_a_masked_name_only(sw: Switch) -> None:
    evp = await register(sw, B, AliasType.EVP, None, "987654321", "Alice Smith")
    await sw.send(C, lookup("EVP", evp, asker=C))
    answer = await sw.receive(C)
    report = report_of(answer)
    assert report.verified and report.agent is not None and report.agent.bicfi == B
    assert report.name == "A**** S****"
    assert b"987654321" not in answer.raw and b"Alice" not in answer.raw
    await sw.send(C, lookup("VPA", "nobody@bankb", asker=C))
    report = report_of(await sw.receive(C))
    assert not report.verified and report.reason == "BE23"


async def test_a_lookup_flood_runs_the_end_users_bucket_dry(
    sw: Switch, small_buckets: Callable[[], None]
) -> None:
    small_buckets()
    refused = {"channel": "queue", "outcome": "refused"}
    counted = REGISTRY.get_sample_value("rtpswitch_alias_lookups_total", refused) or 0.0
    # Miss costs 20 of the end user's 40 tokens: two misses, then refused.
    answers = []
    for i in range(3):
        await sw.send(A, lookup("VPA", f"guess{i}@bankb", end_user="customer-7"))
        answers.append(report_of(await sw.receive(A)))
    assert [r.reason for r in answers] == ["BE23", "BE23", "AM14"]
    assert sw.engine.stats.lookups_refused == 1
    assert REGISTRY.get_sample_value("rtpswitch_alias_lookups_total", refused) == counted + 1
    # Another end user of the same bank still has its own bucket.
    await sw.send(A, lookup("VPA", "guess9@bankb", end_user="customer-8"))
    assert report_of(await sw.receive(A)).reason == "BE23"


async def test_a_lookup_naming_another_assigner_is_refused(sw: Switch) -> None:
    n = uuid4().hex[:20]
    now = datetime.now(UTC)
    doc = identification_verification_request(
        msg_id=f"L{n}", created=now, alias_type="VPA", alias="x@y1", assigner=Agent(bicfi=B)
    )
    await sw.send(A, envelope(Agent(bicfi=A), SWITCH, MessageType.ACMT_023, f"H{n}", doc, now))
    r = await sw.receive(A)
    assert isinstance(r.view, views.MessageReject) and r.view.reason == "RC01"


def event_of(r: Received) -> views.SystemEvent:
    assert isinstance(r.view, views.SystemEvent), r.raw[:300]
    return r.view


async def test_portability_claim_confirmed_moves_the_alias(sw: Switch) -> None:
    api = other_process(sw.store)
    await api.start()
    await api.register(
        participant=B, kind=AliasType.EMAL, value="carol@example.com", account="1", name="Carol"
    )
    claim = await api.claim(
        claimant=C, kind=AliasType.EMAL, value="carol@example.com", account="77", name="Carol"
    )
    for bank in (B, C):
        event = event_of(await sw.receive(bank))
        assert event.code == "PCLM" and claim.id in event.params
    await api.answer_claim(owner=B, claim_id=claim.id, confirm=True)
    for bank in (B, C):
        assert event_of(await sw.receive(bank)).code == "PCNF"
    await sw.send(A, pay_alias("EMAL", "carol@example.com"))
    assert forwarded_creditor(await sw.receive(C))[:2] == (Agent(bicfi=C), "77")


async def test_portability_claim_rejected_leaves_the_alias(sw: Switch) -> None:
    api = other_process(sw.store)
    await api.start()
    await api.register(participant=B, kind=AliasType.VPA, value="c@bankb", account="1", name="C")
    claim = await api.claim(claimant=C, kind=AliasType.VPA, value="c@bankb", account="7", name="C")
    await api.answer_claim(owner=B, claim_id=claim.id, confirm=False)
    codes = {bank: [event_of(await sw.receive(bank)).code for _ in range(2)] for bank in (B, C)}
    assert codes == {B: ["PCLM", "PRJT"], C: ["PCLM", "PRJT"]}
    await sw.send(A, pay_alias("VPA", "c@bankb"))
    assert forwarded_creditor(await sw.receive(B))[1] == "1"


async def test_an_unanswered_claim_completes_after_its_period(sw: Switch) -> None:
    sw.engine.directory.claim_period = timedelta(milliseconds=300)
    await register(sw, B, AliasType.VPA, "d@bankb", "1", "Dan")
    await sw.engine.directory.claim(
        claimant=C, kind=AliasType.VPA, value="d@bankb", account="9", name="Dan"
    )
    for bank in (B, C):
        assert event_of(await sw.receive(bank)).code == "PCLM"
    for bank in (B, C):
        assert event_of(await sw.receive(bank, timeout=5)).code == "PCMP"
    await sw.send(A, pay_alias("VPA", "d@bankb"))
    assert forwarded_creditor(await sw.receive(C))[1] == "9"


@pytest.fixture
def small_buckets(sw: Switch) -> Callable[[], None]:
    """Shrink the engine's lookup buckets: end users 40 tokens, no refill to speak of."""

    def shrink() -> None:
        from switch.directory import BucketSettings, LookupLimiter

        tiny = BucketSettings(size=40.0, refill_per_second=1e-6)
        sw.engine.lookups = LookupLimiter(
            participant=dataclasses.replace(tiny, size=10_000.0), end_user=tiny
        )

    return shrink


@pytest.fixture
def sw(switch: Switch) -> Switch:
    """The e2e switch (banks A, B, C active and funded)."""
    return switch


async def test_a_simulated_bank_looks_up_and_pays_an_alias(sw: Switch) -> None:
    import asyncio

    from simulators import SimulatedBank

    await register(sw, B, AliasType.VPA, "bob@bankb", "987654321", "Bob Jones")
    banks = {
        bic: SimulatedBank(
            bicfi=bic, member_id=BANKS[bic][0], name=BANKS[bic][1], channel=sw.network.connect(bic)
        )
        for bic in (A, B)
    }
    tasks = [asyncio.create_task(b.run()) for b in banks.values()]
    try:
        asked = await banks[A].lookup("VPA", "bob@bankb", end_user="customer-1")
        for _ in range(100):
            answer = banks[A].lookup_answers.get(asked)
            if answer is not None:
                break
            await asyncio.sleep(0.02)
        assert answer is not None
        (report,) = answer.reports
        assert report.verified and report.agent == Agent(bicfi=B) and report.name == "B**** J****"
        pay = await banks[A].pay(
            creditor_agent=report.agent,
            amount=Decimal("5.00"),
            proxy=alias_proxy("VPA", "bob@bankb"),
        )
        final = await banks[A].wait_final(pay.uetr, 5)
        assert final is not None and final.status == "ACSC"
    finally:
        for b in banks.values():
            b.stop()
        await asyncio.gather(*tasks)


async def test_a_commit_that_ends_while_the_directory_is_read_is_sent_at_once(
    sw: Switch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A payment commits while the next batch waits for the directory (its payment names an
    # alias): the first payment is forwarded without waiting for the directory's answer.
    await register(sw, B, AliasType.VPA, "bob@bankb", "987654321", "Bob Jones")
    engine = sw.engine
    committing, commit_may_end = asyncio.Event(), asyncio.Event()
    reading, directory_may_answer = asyncio.Event(), asyncio.Event()
    commit_batch, changes = engine.store.commit_batch, engine.store.directory_changes

    async def slow_commit(batch: Batch) -> None:
        if not commit_may_end.is_set():
            committing.set()
            await commit_may_end.wait()
        await commit_batch(batch)

    async def slow_changes(after: int) -> Any:
        if committing.is_set() and not directory_may_answer.is_set():
            reading.set()
            await directory_may_answer.wait()
        return await changes(after)

    monkeypatch.setattr(engine.store, "commit_batch", slow_commit)
    monkeypatch.setattr(engine.store, "directory_changes", slow_changes)
    try:
        await sw.send(A, pacs008(A, B, amount="1.00"))
        await asyncio.wait_for(committing.wait(), 3)
        await sw.send(A, pay_alias("VPA", "bob@bankb", amount="2.00"))
        await asyncio.wait_for(reading.wait(), 3)
        commit_may_end.set()
        first = await sw.receive(B)  # while the directory has still not answered
        assert not directory_may_answer.is_set()
        assert isinstance(first.view, views.CreditTransfer)
        assert str(first.view.transactions[0].amount.value) == "1.00"
    finally:
        commit_may_end.set()
        directory_may_answer.set()
    agent, account, _ = forwarded_creditor(await sw.receive(B))
    assert agent.bicfi == B and account == "987654321"
