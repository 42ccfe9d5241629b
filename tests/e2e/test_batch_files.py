"""Batch files end to end: a bank uploads over SFTP, the switch clears, the status comes back.

A switch with message security (its own scheme PKI in tmp), on SQLite and PostgreSQL,
clears real-time traffic from signed simulated banks B and C; bank A logs in to the real
SFTP drop with a real paramiko client and its registered SSH key, uploads signed batch
files under a temporary name and renames them. Each test reads what comes back in
`/outbox` over SFTP, checks it is valid for the scheme and the ISO base schemas and
signed by the switch, and checks the money: positions moved exactly by what the status
file says settled, conservation holds, and a refused file moved nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from lxml import etree
from prometheus_client import REGISTRY

from participants.batchfile import BatchTransaction, write_batch_file
from participants.connector import BankConnector
from sftp_bridge import rollover as rollover_module
from sftp_bridge.bridge import FileOutcome
from sftp_bridge.outbox import work_dir
from sftp_bridge.service import BatchChannel
from simulators.bank import SimulatedBank
from switch.core import Participant
from switch.core.money import to_minor
from switch.engine import Engine
from switch.iso20022 import MessageType, ParseLimits, parse, validate
from switch.iso20022.build import StatementTotals
from switch.iso20022.views import Agent
from switch.ledger.statements import BusinessDay, StatementLine
from switch.security.messages import MessageSecurity
from switch.security.pki import SchemeCA, TrustStore
from switch.security.xmldsig import Signer, Verifier
from switch.settings import BatchSettings, load_settings
from switch.store.base import BatchFileState, Store, open_store
from switch.transport import LocalNetwork
from tests.oracle import base_errors

SWITCH_ID = "SWCHUS33XXX"
A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
MEMBERS = {A: "021000021", B: "011000015", C: "026009593"}
OPENING = Decimal("1000.00")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACS002 = "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10"
Q = f"{{{PACS002}}}"


@dataclass
class BatchSwitch:
    engine: Engine
    store: Store
    channel: BatchChannel
    root: Path
    signer: Signer
    trust: TrustStore
    key: paramiko.PKey
    session: tuple[paramiko.SSHClient, paramiko.SFTPClient] | None = None

    def sftp(self) -> paramiko.SFTPClient:
        """Bank A's SFTP session (one per test, opened on first use)."""
        if self.session is None:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.connect(
                "127.0.0.1",
                port=self.channel.port,
                username=A,
                pkey=self.key,
                allow_agent=False,
                look_for_keys=False,
            )
            self.session = (client, client.open_sftp())
        return self.session[1]

    def close(self) -> None:
        if self.session is not None:
            self.session[0].close()

    def upload(self, data: bytes, name: str) -> None:
        sftp = self.sftp()
        with sftp.open(f"/inbox/.{name}.part", "wb") as f:
            f.write(data)
        sftp.rename(f"/inbox/.{name}.part", f"/inbox/{name}")

    async def outcome(self, timeout: float = 60.0) -> FileOutcome:
        return await asyncio.wait_for(self.channel.bridge.outcomes.get(), timeout)

    def fetch(self, name: str) -> bytes:
        sftp = self.sftp()
        assert name in sftp.listdir("/outbox")
        with sftp.open(f"/outbox/{name}", "rb") as f:
            return bytes(f.read())

    def archive(self) -> list[str]:
        return sorted(self.sftp().listdir("/archive"))

    def available(self, participant: str) -> int:
        return self.engine.book.position(participant).available


def transactions(specs: list[tuple[str, str, str]]) -> Iterator[BatchTransaction]:
    for i, (creditor, account, amount) in enumerate(specs):
        yield BatchTransaction(
            uetr=str(uuid.uuid4()),
            end_to_end_id=f"E2E-{i}",
            tx_id=f"TX-{uuid.uuid4().hex[:12]}",
            amount=Decimal(amount),
            creditor_agent=Agent(bicfi=creditor),
            creditor_name="Bob Jones",
            creditor_account=account,
            debtor_name="Alice Smith",
            debtor_account="100200300",
        )


def batch_file(
    bs: BatchSwitch,
    tmp: Path,
    specs: list[tuple[str, str, str]],
    *,
    msg_id: str | None = None,
    sender: str = A,
    signer: Signer | None = None,
) -> bytes:
    path = tmp / f"{uuid.uuid4().hex}.xml"
    write_batch_file(
        path,
        sender=Agent(bicfi=sender),
        switch=Agent(bicfi=SWITCH_ID),
        msg_id=msg_id or f"B{uuid.uuid4().hex[:20]}",
        created=datetime.now(UTC),
        settlement_date=datetime.now(UTC).date(),
        transactions=transactions(specs),
        signer=signer or bs.signer,
    )
    return path.read_bytes()


def unsigned(bs: BatchSwitch, tmp: Path) -> bytes:
    path = tmp / "unsigned.xml"
    write_batch_file(
        path,
        sender=Agent(bicfi=A),
        switch=Agent(bicfi=SWITCH_ID),
        msg_id="BUNSIGNED1",
        created=datetime.now(UTC),
        settlement_date=datetime.now(UTC).date(),
        transactions=transactions([(B, "1", "1.00")]),
        signer=None,
    )
    return path.read_bytes()


def read_status(bs: BatchSwitch, raw: bytes) -> etree._Element:
    """A status (or error) file: valid for both schemas and signed by the switch."""
    msg = parse(raw)
    assert validate(msg) == []
    assert base_errors(raw) == []
    Verifier(bs.trust).verify(raw, SWITCH_ID)
    assert msg.document is not None
    return msg.document


@pytest.fixture
async def bs(store_url: str, tmp_path: Path) -> AsyncIterator[BatchSwitch]:
    pki = tmp_path / "pki"
    ca = SchemeCA.init(pki)
    creds = {p: ca.ensure(p) for p in (SWITCH_ID, A, B, C)}
    trust = TrustStore.load(pki)
    settings = load_settings(store=store_url, response_timeout=1.0)
    settings = dataclasses.replace(
        settings,
        batch=BatchSettings(
            root=tmp_path / "sftp",
            host_key=tmp_path / "host_key",
            max_file_bytes=1 << 20,
            chunk=7,
        ),
    )
    store = open_store(store_url)
    await store.migrate()
    await store.upsert_participants(
        Participant(id=p, member_id=m, name=f"Bank {p[3]}") for p, m in MEMBERS.items()
    )
    network = LocalNetwork()
    engine = Engine(
        settings=settings,
        store=store,
        transport=network.switch,
        security=MessageSecurity(pki, SWITCH_ID),
    )
    await engine.start()
    for p in MEMBERS:
        await engine.fund(p, to_minor(OPENING), "test-opening")
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    banks = []
    runners = []
    for p in (B, C):
        connector = BankConnector(
            network.connect(p),
            signer=Signer.from_files(creds[p].signing_key, creds[p].signing_cert),
            trust=trust,
            switch_id=SWITCH_ID,
        )
        bank = SimulatedBank(
            bicfi=p,
            member_id=MEMBERS[p],
            name=f"Bank {p[3]}",
            channel=connector,
            behaviours={"AC04-000001": "reject:AC04", "SILENT-0001": "silent"},
            response_timeout=1.0,
        )
        banks.append(bank)
        runners.append(asyncio.create_task(bank.run()))
    private = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "a_ssh"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
    channel = BatchChannel(engine, settings.batch, port=0, authorized={A: [key]})
    await channel.start()
    signer = Signer.from_files(creds[A].signing_key, creds[A].signing_cert)
    try:
        handle = BatchSwitch(engine, store, channel, settings.batch.root, signer, trust, key)
        yield handle
    finally:
        await asyncio.to_thread(handle.close)
        await channel.stop()
        for bank in banks:
            bank.stop()
        await asyncio.gather(*runners, return_exceptions=True)
        stop.set()
        await task
        await store.close()


async def conservation_ok(bs: BatchSwitch) -> bool:
    return (await bs.store.conservation()).ok


async def test_a_file_clears_transaction_by_transaction(bs: BatchSwitch, tmp_path: Path) -> None:
    specs: list[tuple[str, str, str]] = [(B, "200300400", "10.00")] * 10 + [
        (C, "300400500", "2.50")
    ] * 6
    specs += [(B, "AC04-000001", "7.00"), (C, "SILENT-0001", "1.00")]
    specs += [("BNKZUS33XXX", "1", "3.00"), (B, "200300400", "5000.00")]
    raw = batch_file(bs, tmp_path, specs)
    before = {p: bs.available(p) for p in MEMBERS}
    cleared = {"outcome": "cleared", "reason": ""}
    files = REGISTRY.get_sample_value("rtpswitch_batch_files_total", cleared) or 0.0
    await asyncio.to_thread(bs.upload, raw, "batch-001.xml")
    outcome = await bs.outcome()
    assert outcome.record.state is BatchFileState.DONE
    assert REGISTRY.get_sample_value("rtpswitch_batch_files_total", cleared) == files + 1
    assert bs.engine.batch_backlog == 0
    assert outcome.record.tx_count == len(specs)
    status = await asyncio.to_thread(bs.fetch, outcome.status_file.name)
    doc = read_status(bs, status)
    txs = doc.findall(f"{Q}FIToFIPmtStsRpt/{Q}TxInfAndSts")
    assert len(txs) == len(specs)
    got = []
    for tx in txs:
        reason = tx.findtext(f"{Q}StsRsnInf/{Q}Rsn/{Q}Cd")
        got.append((tx.findtext(f"{Q}OrgnlEndToEndId"), tx.findtext(f"{Q}TxSts"), reason))
    expected: list[tuple[str, str, str | None]] = [(f"E2E-{i}", "ACSC", None) for i in range(16)]
    expected += [("E2E-16", "RJCT", "AC04"), ("E2E-17", "RJCT", "AB05")]
    expected += [("E2E-18", "RJCT", "RC04"), ("E2E-19", "RJCT", "AM04")]
    assert [g[:2] for g in got[:16]] == [e[:2] for e in expected[:16]]
    assert got[16:18] == expected[16:18]
    assert [g[1] for g in got[18:]] == ["RJCT", "RJCT"]
    grp = doc.find(f"{Q}FIToFIPmtStsRpt/{Q}OrgnlGrpInfAndSts")
    assert grp is not None and grp.findtext(f"{Q}GrpSts") == "PART"
    assert grp.findtext(f"{Q}OrgnlNbOfTxs") == str(len(specs))
    settled = 10 * 1000 + 6 * 250
    assert bs.available(A) == before[A] - settled
    assert bs.available(B) == before[B] + 10 * 1000
    assert bs.available(C) == before[C] + 6 * 250
    assert await conservation_ok(bs)
    archived = await asyncio.to_thread(bs.archive)
    original = next(n for n in archived if n.endswith(".batch-001.xml"))
    assert (bs.root / A / "archive" / original).read_bytes() == raw
    assert outcome.status_file.name in archived
    assert hashlib.sha256(raw).hexdigest() == outcome.record.sha256


async def test_a_file_sent_again_is_refused_and_moves_nothing(
    bs: BatchSwitch, tmp_path: Path
) -> None:
    raw = batch_file(bs, tmp_path, [(B, "200300400", "1.00")] * 3, msg_id="BDUP0001")
    await asyncio.to_thread(bs.upload, raw, "first.xml")
    first = await bs.outcome()
    assert first.record.state is BatchFileState.DONE
    after_first = {p: bs.available(p) for p in MEMBERS}
    await asyncio.to_thread(bs.upload, raw, "again.xml")  # the same bytes
    again = await bs.outcome()
    other = batch_file(bs, tmp_path, [(C, "1", "2.00")], msg_id="BDUP0001")  # same MsgId
    await asyncio.to_thread(bs.upload, other, "same-msgid.xml")
    same_id = await bs.outcome()
    for outcome, what in ((again, "content"), (same_id, "MsgId")):
        assert outcome.record.state is BatchFileState.REFUSED and outcome.record.reason == "DUPL"
        doc = read_status(bs, await asyncio.to_thread(bs.fetch, outcome.status_file.name))
        grp = doc.find(f"{Q}FIToFIPmtStsRpt/{Q}OrgnlGrpInfAndSts")
        assert grp is not None and grp.findtext(f"{Q}GrpSts") == "RJCT"
        assert grp.findtext(f"{Q}StsRsnInf/{Q}Rsn/{Q}Cd") == "DUPL"
        assert f"same {what}" in (grp.findtext(f"{Q}StsRsnInf/{Q}AddtlInf") or "")
        assert doc.find(f"{Q}FIToFIPmtStsRpt/{Q}TxInfAndSts") is None
    assert {p: bs.available(p) for p in MEMBERS} == after_first
    assert await conservation_ok(bs)


async def test_bad_files_get_a_clear_answer_and_nothing_clears(
    bs: BatchSwitch, tmp_path: Path
) -> None:
    before = {p: bs.available(p) for p in MEMBERS}
    good = batch_file(bs, tmp_path, [(B, "200300400", "1.00")] * 2)
    other_key = SchemeCA.load(tmp_path / "pki").ensure(B)
    cases: list[tuple[str, bytes, str, str]] = [
        ("not-xml.xml", b"this is not XML at all", "admi", "not well-formed"),
        ("empty.xml", b"", "admi", "empty"),
        (
            "tampered.xml",
            good.replace(b">E2E-1<", b">E2E-9<"),
            "DS0B",
            "digest mismatch",
        ),
        (
            "unsigned.xml",
            unsigned(bs, tmp_path),
            "DS0B",
            "not signed",
        ),
        (
            "wrong-sender.xml",
            batch_file(
                bs,
                tmp_path,
                [(C, "1", "1.00")],
                sender=B,
                signer=Signer.from_files(other_key.signing_key, other_key.signing_cert),
            ),
            "RC01",
            "not the logged-in participant",
        ),
        (
            "wrong-schema.xml",
            bs.signer.sign(EXAMPLES.joinpath("pacs.028.xml").read_bytes()),
            "FF01",
            "breaks the scheme schema",
        ),
    ]
    for name, data, code, words in cases:
        refused = {"outcome": "refused", "reason": "unusable" if code == "admi" else code}
        counted = REGISTRY.get_sample_value("rtpswitch_batch_files_total", refused) or 0.0
        await asyncio.to_thread(bs.upload, data, name)
        outcome = await bs.outcome()
        assert outcome.record.state is BatchFileState.REFUSED, name
        assert REGISTRY.get_sample_value("rtpswitch_batch_files_total", refused) == counted + 1
        raw = await asyncio.to_thread(bs.fetch, outcome.status_file.name)
        doc = read_status(bs, raw)
        if code == "admi":
            assert outcome.record.reason == "unusable", name
            assert parse(raw).mtype is MessageType.ADMI_002
            assert words in (doc.findtext(".//{*}RsnDesc") or ""), name
        else:
            assert outcome.record.reason == code, (name, outcome.record.reason)
            grp = doc.find(f"{Q}FIToFIPmtStsRpt/{Q}OrgnlGrpInfAndSts")
            assert grp is not None and grp.findtext(f"{Q}StsRsnInf/{Q}Rsn/{Q}Cd") == code
            assert words in (grp.findtext(f"{Q}StsRsnInf/{Q}AddtlInf") or ""), name
        archived = (bs.root / A / "archive" / outcome.record.archived).read_bytes()
        assert archived == data, name
    assert {p: bs.available(p) for p in MEMBERS} == before
    assert await conservation_ok(bs)


async def test_an_oversized_upload_is_refused_by_the_drop(bs: BatchSwitch) -> None:
    def big() -> None:
        with bs.sftp().open("/inbox/.big.part", "wb") as f:
            f.write(b"<" * ((1 << 20) + 1))
            f.flush()

    with pytest.raises(OSError):
        await asyncio.to_thread(big)
    assert bs.channel.bridge.outcomes.empty()


# --- end of day ------------------------------------------------------------------------

CAMT053 = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
S = f"{{{CAMT053}}}"


def after_rollover(bs: BatchSwitch, days: int = 1) -> datetime:
    """An instant just past the statement delay after the end of today's business day
    (`days` - 1 business days later)."""
    rollover = bs.channel.rollover
    today = rollover.calendar.day_of(datetime.now(UTC))
    end = rollover.calendar.day(today.date + timedelta(days=days - 1)).end
    return end + rollover.delay + timedelta(seconds=1)


def read_statement(bs: BatchSwitch, raw: bytes) -> etree._Element:
    """A statement: valid for both schemas, signed by the switch; its Stmt element."""
    doc = read_status(bs, raw)
    stmt = doc.find(f"{S}BkToCstmrStmt/{S}Stmt")
    assert stmt is not None
    return stmt


def balance(stmt: etree._Element, code: str) -> int:
    for bal in stmt.findall(f"{S}Bal"):
        if bal.findtext(f"{S}Tp/{S}CdOrPrtry/{S}Cd") == code:
            minor = to_minor(Decimal(bal.findtext(f"{S}Amt") or ""))
            return -minor if bal.findtext(f"{S}CdtDbtInd") == "DBIT" else minor
    raise AssertionError(f"no {code} balance")


def entries(stmt: etree._Element) -> list[tuple[str, str, int, str | None]]:
    """(kind, CRDT|DBIT, minor units, EndToEndId) of each entry, in order."""
    return [
        (
            n.findtext(f"{S}BkTxCd/{S}Prtry/{S}Cd") or "",
            n.findtext(f"{S}CdtDbtInd") or "",
            to_minor(Decimal(n.findtext(f"{S}Amt") or "")),
            n.findtext(f"{S}NtryDtls/{S}TxDtls/{S}Refs/{S}EndToEndId"),
        )
        for n in stmt.findall(f"{S}Ntry")
    ]


@pytest.mark.parametrize("page", [2, rollover_module.PAGE])
async def test_at_rollover_every_participant_gets_its_statement(
    bs: BatchSwitch, tmp_path: Path, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollover_module, "PAGE", page)  # the day's journal read by pages
    specs = [(B, "200300400", "10.00")] * 3 + [(C, "300400500", "2.50")]
    specs += [(B, "AC04-000001", "7.00")]
    raw = batch_file(bs, tmp_path, specs)
    await asyncio.to_thread(bs.upload, raw, "eod.xml")
    assert (await bs.outcome()).record.state is BatchFileState.DONE
    now = after_rollover(bs)
    done = await bs.channel.rollover.roll(now)
    assert sorted(o.record.participant for o in done) == sorted(MEMBERS)
    today = bs.channel.rollover.calendar.day_of(datetime.now(UTC)).date
    name = f"camt053_{A}_{today.strftime('%Y%m%d')}.xml"
    assert {o.record.file_name for o in done if o.record.participant == A} == {name}
    stmt = read_statement(bs, await asyncio.to_thread(bs.fetch, name))
    assert stmt.findtext(f"{S}ElctrncSeqNb") == "1"
    assert balance(stmt, "OPBD") == 0  # funded today, on a fresh scheme
    assert balance(stmt, "CLBD") == bs.engine.book.position(A).total
    opening = ("fund", "CRDT", to_minor(OPENING), None)
    sent = [("settle", "DBIT", 1000, f"E2E-{i}") for i in range(3)]
    assert entries(stmt) == [opening, *sent, ("settle", "DBIT", 250, "E2E-3")]
    for p, received in ((B, [1000] * 3), (C, [250])):
        got = read_statement(
            bs, (bs.root / p / "outbox" / f"camt053_{p}_{today:%Y%m%d}.xml").read_bytes()
        )
        assert balance(got, "CLBD") == bs.engine.book.position(p).total
        assert [e[2] for e in entries(got) if e[0] == "settle"] == received
        assert all(e[1] == "CRDT" for e in entries(got))
    records = {r.participant: r for r in await bs.store.statements()}
    assert records[A].closing == bs.engine.book.position(A).total
    kept = bs.root / A / "archive" / name
    assert records[A].sha256 == hashlib.sha256(kept.read_bytes()).hexdigest()
    # The same rollover again delivers nothing; two days later, both missed days come.
    assert await bs.channel.rollover.roll(now) == []
    later = await bs.channel.rollover.roll(after_rollover(bs, days=3))
    assert [o.record.sequence for o in later if o.record.participant == A] == [2, 3]
    for o in later:
        assert o.record.opening == o.record.closing == records[o.record.participant].closing
        assert o.record.entries == 0
        read_statement(bs, o.path.read_bytes())
    assert await conservation_ok(bs)


async def test_a_statement_delivered_before_a_crash_is_kept_and_recorded_once(
    bs: BatchSwitch, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollover = bs.channel.rollover
    store = bs.store
    record = store.statement_record

    async def crash(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("switch killed after delivery")

    monkeypatch.setattr(store, "statement_record", crash)
    now = after_rollover(bs)
    with pytest.raises(RuntimeError):
        await rollover.roll(now)
    outbox = bs.root / A / "outbox"
    delivered = {p.name: p.read_bytes() for p in outbox.glob("camt053_*")}
    assert len(delivered) == 1
    assert await store.statements() == []
    monkeypatch.setattr(store, "statement_record", record)
    done = await rollover.roll(now + timedelta(minutes=5))
    assert len(done) == len(MEMBERS)
    ((name, raw),) = delivered.items()
    assert outbox.joinpath(name).read_bytes() == raw
    mine = [o.record for o in done if o.record.file_name == name]
    assert len(mine) == 1 and mine[0].sha256 == hashlib.sha256(raw).hexdigest()
    assert await rollover.roll(now + timedelta(minutes=10)) == []


async def test_a_busy_days_statement_is_signed_as_a_stream(bs: BatchSwitch) -> None:
    """A statement far over the real-time message size is written page by page, signed as
    a stream, delivered, and valid."""
    rollover = bs.channel.rollover
    day = rollover.calendar.day_of(datetime.now(UTC))
    lines = [
        StatementLine(
            amount=100 + i,
            credit=i % 3 != 0,
            booked_at=day.start + timedelta(seconds=i),
            kind="settle",
            reference=str(1000 + i),
            end_to_end_id=f"E2E-{i}",
            uetr=str(uuid.uuid4()),
        )
        for i in range(6000)
    ]
    totals = StatementTotals()
    for line in lines:
        totals.add(rollover_module._entry(line))
    closing = 5_000_000 + totals.credits - totals.debits
    plan = rollover_module._Plan(A, day, 5_000_000, closing, totals, 7)
    now = datetime.now(UTC)
    await asyncio.to_thread(rollover._begin, [plan], now)
    for i in range(0, len(lines), 1000):
        page = [(A, line) for line in lines[i : i + 1000]]
        await asyncio.to_thread(rollover._append, {A: plan}, page)
    outcome = await asyncio.to_thread(rollover._deliver, plan, now)
    raw = outcome.path.read_bytes()
    assert len(raw) > 2 * ParseLimits().max_bytes
    assert outcome.record.sha256 == hashlib.sha256(raw).hexdigest()
    assert outcome.record.entries == 6000
    big = ParseLimits(max_bytes=len(raw) + 1)
    msg = parse(raw, big)
    assert validate(msg) == []
    Verifier(bs.trust).verify(raw, SWITCH_ID, limits=big)
    stmt = msg.document.find(f"{S}BkToCstmrStmt/{S}Stmt") if msg.document is not None else None
    assert stmt is not None and balance(stmt, "CLBD") == closing
    assert len(entries(stmt)) == 6000


async def test_a_statement_whose_day_changes_while_it_is_written_waits(
    bs: BatchSwitch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry booked into the day between the two readings of its journal (the clock
    late by more than the statement delay): that participant's statement is not
    delivered with totals its entries do not match; the next look delivers it whole."""
    rollover = bs.channel.rollover
    today = rollover.calendar.day_of(datetime.now(UTC))
    day_totals = rollover._day_totals
    late = {"done": False}

    async def then_a_late_entry(
        day: BusinessDay, participants: Collection[str]
    ) -> dict[str, StatementTotals]:
        totals = await day_totals(day, participants)
        if day == today and not late["done"]:
            late["done"] = True
            await bs.engine.fund(A, 12_345, "late-funding")
        return totals

    monkeypatch.setattr(rollover, "_day_totals", then_a_late_entry)
    now = after_rollover(bs)
    counted = {
        outcome: REGISTRY.get_sample_value("rtpswitch_statements_total", {"outcome": outcome})
        or 0.0
        for outcome in ("delivered", "not_made")
    }
    done = await rollover.roll(now)
    for outcome, more in (("delivered", len(MEMBERS) - 1), ("not_made", 1)):
        got = REGISTRY.get_sample_value("rtpswitch_statements_total", {"outcome": outcome})
        assert got == counted[outcome] + more
    assert sorted(o.record.participant for o in done) == sorted(set(MEMBERS) - {A})
    assert not list((bs.root / A / "outbox").glob("camt053_*"))
    assert not list(work_dir(bs.root).glob("*.unsigned"))
    (again,) = await rollover.roll(now + timedelta(minutes=1))
    assert again.record.participant == A and again.record.sequence == 1
    assert again.record.closing == bs.engine.book.position(A).total
    stmt = read_statement(bs, again.path.read_bytes())
    assert ("fund", "CRDT", 12_345, None) in entries(stmt)
    assert await rollover.roll(now + timedelta(minutes=2)) == []
