"""The store against real databases: what a batch writes, all or nothing, and read back.

Every test runs on SQLite and on PostgreSQL (see conftest), with the same expectations.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from switch.core import InternalError, Money, Participant, ParticipantStatus, PaymentState
from switch.ledger import Book, JournalEntry, Position, PositionDelta, net_deltas, replay
from switch.store import (
    ArchivedMessage,
    Batch,
    Direction,
    PaymentRecord,
    PaymentUpdate,
    RecallKeys,
    State,
    Store,
    postgres,
    sqlite,
)
from switch.store.postgres import PostgresStore
from switch.store.sqlite import SqliteStore, sqlite_path
from switch.store.testing import reset_database

A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
PARTICIPANTS = [
    Participant(id=A, member_id="021000021", name="Bank A"),
    Participant(id=B, member_id="011000015", name="Bank B"),
    Participant(
        id=C,
        member_id="026009593",
        name="Bank C",
        limit=Money(minor=500_000, currency="USD"),
    ),
]
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Refused(Exception):
    """The database refused a raw statement."""


async def raw_execute(store: Store, sql: str) -> None:
    """Run `sql` on a connection of its own, bypassing the store; Refused if refused."""
    if isinstance(store, SqliteStore):
        path = sqlite_path(store.url)

        def work() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute(sql)
            finally:
                conn.close()

        try:
            await asyncio.to_thread(work)
        except sqlite3.Error as exc:
            raise Refused(str(exc)) from exc
        return
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(store.url)
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise Refused(str(exc)) from exc
    finally:
        await conn.close()


def message(
    mid: str,
    direction: Direction = Direction.IN,
    participant: str = A,
    *,
    at: datetime = T0,
    payment_id: str | None = None,
    in_reply_to: str | None = None,
    msg_type: str = "pacs.008.001.08",
) -> ArchivedMessage:
    raw = f"<Document><Id>{mid}</Id></Document>".encode() + bytes(range(256))
    return ArchivedMessage(
        id=mid,
        direction=direction,
        participant=participant,
        msg_type=msg_type,
        biz_msg_id=f"biz-{mid}",
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=raw,
        at=at,
        payment_id=payment_id,
        in_reply_to=in_reply_to,
    )


def payment(
    pid: str,
    *,
    debtor: str = A,
    creditor: str | None = B,
    amount: int = 10_000,
    state: PaymentState = PaymentState.RESERVED,
    e2e: str | None = None,
    tx_id: str | None = None,
    uetr: str | None = None,
) -> PaymentRecord:
    return PaymentRecord(
        id=pid,
        uetr=uetr or f"uetr-{pid}",
        msg_id=f"msg-{pid}",
        instr_id=None,
        end_to_end_id=e2e or f"e2e-{pid}",
        tx_id=tx_id,
        debtor_agent=debtor,
        creditor_agent=creditor,
        amount=amount,
        state=state,
        reason=None,
        created_at=T0,
        updated_at=T0,
        deadline=T0 + timedelta(seconds=5),
        inbound_id=f"in-{pid}",
        debtor_named_by="BICFI",
        creditor_named_by="USABA",
    )


def book_of(state: State) -> Book:
    return Book.from_positions(state.positions, funded=state.funded, defunded=state.defunded)


async def fund(store: Store, amounts: dict[str, int]) -> None:
    """Commit one batch funding each participant."""
    book = book_of(await store.load_state())
    entries = [e for p, amount in amounts.items() for e in book.fund(p, amount, f"fund-{p}")]
    await store.commit_batch(Batch(journal=entries, deltas=net_deltas(entries)))


async def snapshot(store: Store) -> tuple[State, list[JournalEntry]]:
    """What a refused batch must leave unchanged: the whole state and the journal."""
    return await store.load_state(), await store.journal()


# --- migrations and participants ------------------------------------------------------------


async def test_migrate_applies_once(blank_store: Store) -> None:
    dialect = postgres if isinstance(blank_store, postgres.PostgresStore) else sqlite
    shipped = [version for version, _ in dialect.migrations()]
    assert shipped[0] == "0001_init"
    assert await blank_store.migrate() == shipped
    assert await blank_store.migrate() == []
    state = await blank_store.load_state()
    assert state.participants == {}
    assert (state.funded, state.defunded) == (0, 0)


async def test_upsert_participants_creates_zero_positions(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    state = await store.load_state()
    assert state.participants == {p.id: p for p in PARTICIPANTS}
    assert state.positions == {p.id: Position() for p in PARTICIPANTS}

    changed = replace(PARTICIPANTS[0], name="Bank A Renamed", status=ParticipantStatus.SUSPENDED)
    await fund(store, {A: 700})
    await store.upsert_participants([changed])
    state = await store.load_state()
    assert state.participants[A] == changed
    assert state.positions[A] == Position(available=700)


# --- commit_batch and load_state ------------------------------------------------------------


async def test_commit_batch_writes_everything_and_load_state_returns_it(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 100_000})
    book = book_of(await store.load_state())
    p1, p2 = payment("p1"), payment("p2", tx_id="tx-2", amount=2_500)
    entries = book.reserve(A, p1.amount, p1.id) + book.reserve(A, p2.amount, p2.id)
    inbound = [message("in-p1", payment_id="p1"), message("in-p2", payment_id="p2")]
    outbound = [
        message("out-p1", Direction.OUT, B, at=T0 + timedelta(milliseconds=2), payment_id="p1"),
        message("out-p2", Direction.OUT, B, at=T0 + timedelta(milliseconds=1), payment_id="p2"),
    ]
    batch = Batch(
        messages=inbound + outbound,
        new_payments=[p1, p2],
        journal=entries,
        deltas=net_deltas(entries),
        msg_ids=[(A, "msg-p1"), (A, "msg-p2")],
    )
    await store.commit_batch(batch)

    state = await store.load_state()
    assert state.participants == {p.id: p for p in PARTICIPANTS}
    assert state.positions == {
        A: Position(available=100_000 - 12_500, reserved=12_500),
        B: Position(),
        C: Position(),
    }
    assert (state.funded, state.defunded) == (100_000, 0)
    assert sorted(state.payments, key=lambda p: p.id) == [p1, p2]
    assert state.msg_ids == frozenset({(A, "msg-p1"), (A, "msg-p2")})
    assert state.inbound_hashes == {(A, m.sha256): m.id for m in inbound}
    assert list(state.unsent) == [outbound[1], outbound[0]]  # in order of `at`
    assert await store.fetch_messages(["out-p1", "nope", "in-p2"]) == [outbound[0], inbound[1]]
    assert all(m.at.tzinfo is not None for m in state.unsent)


async def test_load_state_open_only_leaves_the_final_and_recall_finds_them(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    empty = await store.load_state(open_only=True)
    assert not empty.partial and not empty.payments
    done = payment("p1", state=PaymentState.SETTLED, tx_id="T1")
    flying = payment("p2", state=PaymentState.FORWARDED)
    inbound = [message("in-p1", payment_id="p1"), message("in-p2", payment_id="p2")]
    # The same bytes again, later: the first of them is the one a resend refers to.
    again = replace(inbound[0], id="in-p1-again", at=T0 + timedelta(seconds=1))
    await store.commit_batch(
        Batch(
            messages=[*inbound, again],
            new_payments=[done, flying],
            msg_ids=[(A, "msg-p1"), (A, "msg-p2")],
        )
    )
    state = await store.load_state(open_only=True)
    assert list(state.payments) == [flying]
    assert state.partial and not state.msg_ids and not state.inbound_hashes
    assert len((await store.load_state()).payments) == 2  # a full load still has both

    got = await store.recall(
        RecallKeys(
            msg_ids=[(A, "msg-p1"), (A, "nope"), (B, "msg-p1")],
            uetrs=["uetr-p1", "uetr-nope"],
            transactions=[
                (A, "e2e-p2", ""),
                (A, "e2e-p1", "T1"),
                (A, "e2e-p1", ""),
                (B, "e2e-p2", ""),
            ],
            hashes=[(A, inbound[0].sha256), (B, inbound[0].sha256), (A, "0" * 64)],
        )
    )
    assert got.msg_ids == frozenset({(A, "msg-p1")})
    assert sorted(got.payments, key=lambda p: p.id) == [done, flying]
    assert got.inbound_hashes == {(A, inbound[0].sha256): "in-p1"}
    nothing = await store.recall(RecallKeys(uetrs=["uetr-nope"], hashes=[(C, "1" * 64)]))
    assert not nothing.payments and not nothing.msg_ids and not nothing.inbound_hashes


async def test_payment_updates(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    p1, p2 = payment("p1", state=PaymentState.RECEIVED), payment("p2")
    await store.commit_batch(Batch(new_payments=[p1]))
    t1 = T0 + timedelta(seconds=1)
    await store.commit_batch(
        Batch(
            new_payments=[p2],
            updates=[
                PaymentUpdate(
                    id="p1", state=PaymentState.RESERVED, reason=None, updated_at=t1, deadline=t1
                ),
                PaymentUpdate(
                    id="p1",
                    state=PaymentState.REJECTED,
                    reason="AB05",
                    updated_at=t1,
                    deadline=None,
                ),
                # a payment created in the same batch
                PaymentUpdate(
                    id="p2", state=PaymentState.FORWARDED, reason=None, updated_at=t1, deadline=t1
                ),
            ],
        )
    )
    state = await store.load_state()
    got = {p.id: p for p in state.payments}
    assert got["p1"] == replace(
        p1, state=PaymentState.REJECTED, reason="AB05", updated_at=t1, deadline=None
    )
    assert got["p2"] == replace(p2, state=PaymentState.FORWARDED, updated_at=t1, deadline=t1)

    before = await snapshot(store)
    unknown = PaymentUpdate(
        id="nope", state=PaymentState.SETTLED, reason=None, updated_at=t1, deadline=None
    )
    with pytest.raises(InternalError, match="do not exist"):
        await store.commit_batch(Batch(messages=[message("m-x")], updates=[unknown]))
    assert await snapshot(store) == before


# --- atomicity ------------------------------------------------------------------------------


async def test_overdraft_aborts_the_whole_batch(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 1_000})
    before = await snapshot(store)
    book = book_of(await store.load_state())
    ok = book.reserve(A, 600, "p1")
    # B has nothing: an entry the in-memory book would refuse, forced through the store
    deltas = net_deltas(ok)
    deltas[B] = PositionDelta(d_available=-1, d_reserved=1)
    batch = Batch(
        messages=[message("in-p1", payment_id="p1"), message("out-p1", Direction.OUT, B)],
        new_payments=[payment("p1", amount=600)],
        journal=ok,
        deltas=deltas,
        msg_ids=[(A, "msg-p1")],
    )
    with pytest.raises(InternalError, match=r"refused by the database.*available"):
        await store.commit_batch(batch)
    assert await snapshot(store) == before
    assert await store.fetch_messages(["in-p1", "out-p1"]) == []
    assert (await store.conservation()).ok


async def test_unknown_participant_in_deltas_aborts_the_batch(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 1_000})
    before = await snapshot(store)
    book = book_of(await store.load_state())
    entries = book.reserve(A, 100, "p1")
    deltas = net_deltas(entries)
    deltas["BNKZUS33XXX"] = deltas[A]
    with pytest.raises(InternalError, match="no position"):
        await store.commit_batch(Batch(messages=[message("in-p1")], journal=entries, deltas=deltas))
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(payment("p2", uetr="uetr-p1"), id="uetr"),
        pytest.param(payment("p2", e2e="e2e-p1"), id="e2e-without-txid"),
    ],
)
async def test_duplicate_payment_aborts_the_batch(store: Store, second: PaymentRecord) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.commit_batch(Batch(new_payments=[payment("p1")], msg_ids=[(A, "msg-p1")]))
    before = await snapshot(store)
    with pytest.raises(InternalError, match="refused by the database"):
        await store.commit_batch(
            Batch(
                messages=[message("in-p2")],
                new_payments=[second],
                msg_ids=[(A, "msg-p2")],
            )
        )
    assert await snapshot(store) == before
    assert await store.fetch_messages(["in-p2"]) == []


async def test_same_e2e_with_other_tx_id_is_not_a_duplicate(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.commit_batch(Batch(new_payments=[payment("p1", e2e="e2e", tx_id="t1")]))
    await store.commit_batch(Batch(new_payments=[payment("p2", e2e="e2e", tx_id="t2")]))
    await store.commit_batch(Batch(new_payments=[payment("p3", e2e="e2e")]))
    await store.commit_batch(Batch(new_payments=[payment("p4", e2e="e2e", debtor=B)]))
    with pytest.raises(InternalError):
        await store.commit_batch(Batch(new_payments=[payment("p5", e2e="e2e", tx_id="t1")]))
    with pytest.raises(InternalError):
        await store.commit_batch(Batch(new_payments=[payment("p6", e2e="e2e")]))
    assert len((await store.load_state()).payments) == 4


async def test_duplicate_msg_id_aborts_the_batch(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.commit_batch(Batch(msg_ids=[(A, "m1")]))
    await store.commit_batch(Batch(msg_ids=[(B, "m1")]))  # another sender: no duplicate
    before = await snapshot(store)
    with pytest.raises(InternalError):
        await store.commit_batch(
            Batch(messages=[message("in-x")], new_payments=[payment("px")], msg_ids=[(A, "m1")])
        )
    assert await snapshot(store) == before


async def test_duplicate_message_id_aborts_the_batch(store: Store) -> None:
    await store.commit_batch(Batch(messages=[message("m1")]))
    with pytest.raises(InternalError):
        await store.commit_batch(Batch(messages=[message("m2"), message("m1")]))
    assert await store.fetch_messages(["m2"]) == []


# --- outbox ---------------------------------------------------------------------------------


async def test_mark_sent_removes_from_unsent(store: Store) -> None:
    out = [message(f"o{i}", Direction.OUT, B, at=T0 + timedelta(seconds=i)) for i in range(3)]
    await store.commit_batch(Batch(messages=[message("i1"), *out]))
    assert [m.id for m in (await store.load_state()).unsent] == ["o0", "o1", "o2"]
    sent = T0 + timedelta(minutes=1)
    await store.mark_sent(["o0", "o2"], sent)
    await store.mark_sent(["o0"], sent + timedelta(minutes=1))  # again: changes nothing
    assert [m.id for m in (await store.load_state()).unsent] == ["o1"]
    assert [m.sent_at for m in await store.fetch_messages(["o0", "o1", "o2"])] == [
        sent,
        None,
        sent,
    ]


@pytest.mark.postgres
async def test_sent_marks_never_test_each_row_against_all_ids(pg_url: str) -> None:
    """The sent marks (alone and inside a batch's statement) find their messages by key:
    as `id = ANY(...)` on the archived rows the planner, whose statistics saw almost
    nothing unsent, tested every unsent entry against the whole array of ids, and a
    batch's marks took milliseconds per message under load."""
    await reset_database(pg_url)
    store = PostgresStore(pg_url)
    try:
        await store.migrate()
        sent = [message(f"s{i:04}", Direction.OUT, B) for i in range(4_000)]
        await store.commit_batch(Batch(messages=sent))
        await store.mark_sent([m.id for m in sent], T0)
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("ANALYZE")  # the statistics say: nothing unsent
            out = [message(f"o{i:04}", Direction.OUT, B) for i in range(600)]
            await store.commit_batch(Batch(messages=out))
            ids = [m.id for m in out]
            for sql, args in (
                (postgres._OUTBOX, ([], ids, T0)),
                (_sent_marks_of_the_batch_statement(), (ids,)),
            ):
                plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
                assert not _filters_rows_through_an_array(plan[0]["Plan"]), plan
        finally:
            await conn.close()
        await store.mark_sent(ids, T0)
        assert (await store.load_state()).unsent == []
        assert {m.sent_at for m in await store.fetch_messages(ids)} == {T0}
    finally:
        await store.close()


def _filters_rows_through_an_array(node: dict[str, Any]) -> bool:
    """Whether a plan node or one below it tests each row it scans against an array."""
    if "ANY" in node.get("Filter", ""):
        return True
    return any(_filters_rows_through_an_array(n) for n in node.get("Plans", []))


def _sent_marks_of_the_batch_statement() -> str:
    """The sent-marks part of the one-statement batch write, as a statement of its own."""
    text = postgres._WRITE_ALL
    start = text.index("DELETE FROM outbox")
    body = text[start : text.index("), mrk AS (", start)]
    return body.replace("$47", "$1")


async def test_the_outbox_migration_keeps_what_was_sent_and_what_was_not(
    blank_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database from before the outbox table: its unsent messages are the outbox after
    the migration, and the sent times already recorded stay what they were."""
    module = sqlite if isinstance(blank_store, SqliteStore) else postgres
    shipped = module.migrations()
    versions = [v for v, _ in shipped]
    first = next(i for i, v in enumerate(versions) if v.endswith("_outbox"))
    monkeypatch.setattr(module, "migrations", lambda: shipped[:first])
    await blank_store.migrate()
    raw = "X'3c612f3e'" if module is sqlite else "decode('3c612f3e', 'hex')"
    sent, unsent = "2024-05-01T12:00:01.000000Z", "2024-05-01T12:00:02.000000Z"
    for mid, at, sent_at in (("o1", sent, "'2024-05-01T12:00:03.000000Z'"), ("o2", unsent, "NULL")):
        await raw_execute(
            blank_store,
            "INSERT INTO messages (id, direction, participant, msg_type, sha256, raw, at, "
            f"sent_at) VALUES ('{mid}', 'out', '{B}', 'pacs.002', 'ab', {raw}, "
            f"'{at}', {sent_at})",
        )
    monkeypatch.setattr(module, "migrations", lambda: shipped)
    assert await blank_store.migrate() == versions[first:]
    assert [m.id for m in (await blank_store.load_state()).unsent] == ["o2"]
    o1, o2 = await blank_store.fetch_messages(["o1", "o2"])
    assert o1.sent_at == datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)
    assert o2.sent_at is None
    await blank_store.mark_sent(["o1", "o2"], T0)  # o1 was sent before: it keeps its time
    o1, o2 = await blank_store.fetch_messages(["o1", "o2"])
    assert (o1.sent_at, o2.sent_at) == (datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC), T0)
    assert (await blank_store.load_state()).unsent == []


async def test_inbound_messages_archived_before_the_file_marks_stay_resend_candidates(
    blank_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages archived before `batch_file` existed keep their place among the inbound
    hashes (none of them is taken for a batch file's transaction)."""
    module = sqlite if isinstance(blank_store, SqliteStore) else postgres
    shipped = module.migrations()
    versions = [v for v, _ in shipped]
    at = versions.index(next(v for v in versions if v.endswith("_file_transactions")))
    monkeypatch.setattr(module, "migrations", lambda: shipped[:at])
    await blank_store.migrate()
    raw = "X'3c612f3e'" if module is sqlite else "decode('3c612f3e', 'hex')"
    await raw_execute(
        blank_store,
        "INSERT INTO messages (id, direction, participant, msg_type, sha256, raw, at) "
        f"VALUES ('i1', 'in', '{A}', 'pacs.008', 'ab', {raw}, '2024-05-01T12:00:01.000000Z')",
    )
    monkeypatch.setattr(module, "migrations", lambda: shipped)
    assert await blank_store.migrate() == versions[at:]
    assert (await blank_store.load_state()).inbound_hashes == {(A, "ab"): "i1"}
    assert [m.batch_file for m in await blank_store.fetch_messages(["i1"])] == [None]


# --- append-only ----------------------------------------------------------------------------


async def test_journal_and_messages_are_append_only(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 1_000})
    await store.commit_batch(Batch(messages=[message("i1"), message("o1", Direction.OUT, B)]))
    for sql in (
        "UPDATE journal SET amount = 1",
        "DELETE FROM journal",
        "DELETE FROM messages WHERE id = 'i1'",
        "UPDATE messages SET biz_msg_id = 'changed' WHERE id = 'o1'",
        "UPDATE messages SET participant = 'BNKCUS33XXX' WHERE id = 'o1'",
    ):
        with pytest.raises(Refused, match="refused"):
            await raw_execute(store, sql)
    with pytest.raises(Refused, match="refused"):  # sending is marked in sent_marks
        await raw_execute(
            store, "UPDATE messages SET sent_at = '2024-05-01T12:00:02Z' WHERE id = 'o1'"
        )
    await store.mark_sent(["o1"], T0)
    for sql in (
        "UPDATE sent_marks SET sent_at = '2024-05-01T12:00:02Z'",
        "DELETE FROM sent_marks",
    ):
        with pytest.raises(Refused, match="refused"):
            await raw_execute(store, sql)
    assert [m.sent_at for m in await store.fetch_messages(["o1"])] == [T0]
    assert len(await store.journal()) == 1
    assert len(await store.fetch_messages(["i1", "o1"])) == 2


# --- the ledger in the database -------------------------------------------------------------


async def test_conservation_and_replay_after_a_payment_lifecycle(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    book = book_of(await store.load_state())

    async def commit(*entries: list[JournalEntry]) -> None:
        journal = [e for group in entries for e in group]
        await store.commit_batch(Batch(journal=journal, deltas=net_deltas(journal)))

    await commit(book.fund(A, 50_000, "f1"), book.fund(B, 20_000, "f2"), book.fund(C, 300, "f3"))
    await commit(book.reserve(A, 10_000, "p1"), book.reserve(A, 5_000, "p2"))
    await commit(book.settle(A, B, 10_000, "p1"), book.release(A, 5_000, "p2"))
    await commit(book.reserve(B, 7_000, "p3"), book.defund(A, 1_000, "d1"))
    # reserve and release of one payment inside one batch: the journal grows, no position moves
    await commit(book.reserve(C, 300, "p4"), book.release(C, 300, "p4"))

    report = await store.conservation()
    assert report == book.conservation()
    assert report.ok
    assert (report.total_available, report.total_reserved) == (62_300, 7_000)
    assert (report.funded, report.defunded) == (70_300, 1_000)

    state = await store.load_state()
    replayed = replay(await store.journal())
    assert replayed == book
    assert dict(replayed.snapshot().positions) == dict(state.positions)
    assert (replayed.funded, replayed.defunded) == (state.funded, state.defunded)


async def test_responses_to(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    p1 = payment("p1")  # inbound_id "in-p1"
    t = [T0 + timedelta(seconds=i) for i in range(6)]
    msgs = [
        message("in-p1", Direction.IN, A, at=t[0], payment_id="p1"),
        message("fwd", Direction.OUT, B, at=t[1], payment_id="p1"),
        message("acsc", Direction.OUT, A, at=t[3], payment_id="p1", msg_type="pacs.002.001.10"),
        message("in-q", Direction.IN, A, at=t[2], payment_id="p1", msg_type="pacs.028.001.03"),
        message("ans-q", Direction.OUT, A, at=t[2], payment_id="p1", in_reply_to="in-q"),
        message("in-bad", Direction.IN, A, at=t[4]),
        message("rej", Direction.OUT, A, at=t[5], in_reply_to="in-bad", msg_type="admi.002.001.01"),
    ]
    await store.commit_batch(Batch(messages=msgs, new_payments=[p1]))
    assert [m.id for m in await store.responses_to("in-p1", A)] == ["ans-q", "acsc"]
    assert [m.id for m in await store.responses_to("in-p1", B)] == ["fwd"]
    assert [m.id for m in await store.responses_to("in-q", A)] == ["ans-q"]
    assert [m.id for m in await store.responses_to("in-bad", A)] == ["rej"]
    assert await store.responses_to("in-bad", B) == []
    assert await store.responses_to("nope", A) == []


async def test_counters(store: Store) -> None:
    assert isinstance(store, SqliteStore | PostgresStore)
    await store.upsert_participants(PARTICIPANTS)
    trips, txs = store.round_trips, store.transactions
    await fund(store, {A: 1_000, B: 1_000})
    assert store.transactions == txs + 1
    assert store.round_trips > trips
    trips = store.round_trips
    book = book_of(await store.load_state())
    trips_load = store.round_trips - trips
    entries = book.reserve(A, 10, "p1")
    await store.commit_batch(
        Batch(
            messages=[message("i1"), message("o1", Direction.OUT, B)],
            new_payments=[payment("p1", amount=10)],
            journal=entries,
            deltas=net_deltas(entries),
            msg_ids=[(A, "msg-p1")],
        )
    )
    assert store.transactions == txs + 2
    per_batch = store.round_trips - trips - trips_load
    # PostgreSQL: a small batch is one statement (messages, position locks in participant
    # order, positions, payments, journal, msg ids), atomic on its own.
    # SQLite: BEGIN, one executemany per kind of row (messages, outbox, payments,
    # positions, journal, msg ids), COMMIT.
    assert per_batch == (1 if isinstance(store, PostgresStore) else 8)
    await store.commit_batch(Batch())  # nothing to write: no transaction
    assert store.transactions == txs + 2


@pytest.mark.parametrize("n", [3, 150])
async def test_small_and_large_batches_commit_alike(store: Store, n: int) -> None:
    """PostgreSQL writes small batches as one statement and large ones with COPY."""
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 1_000_000})
    book = book_of(await store.load_state())
    entries = [e for i in range(n) for e in book.reserve(A, 10, f"p{i}")]
    batch = Batch(
        messages=[message(f"m{i}") for i in range(n)],
        new_payments=[payment(f"p{i}", amount=10) for i in range(n)],
        journal=entries,
        deltas=net_deltas(entries),
        msg_ids=[(A, f"msg-{i}") for i in range(n)],
    )
    await store.commit_batch(batch)
    state = await store.load_state()
    assert len(state.payments) == n
    assert len(state.inbound_hashes) == n
    assert state.positions[A].reserved == 10 * n
    assert (await store.conservation()).ok
    sent = Batch(sent=["m0"], sent_at=T0)  # inbound ids are never marked sent
    await store.commit_batch(sent)
    with pytest.raises(InternalError):
        bad = book.release(A, 10, "p0")  # the book has it; the store will not find p-none
        await store.commit_batch(
            Batch(
                messages=[message("late")],
                journal=bad,
                deltas=net_deltas(bad),
                updates=[
                    PaymentUpdate(
                        id="p-none",
                        state=PaymentState.REJECTED,
                        reason="AB05",
                        updated_at=T0,
                        deadline=None,
                    )
                ],
            )
        )
    after = await store.load_state()
    assert after.positions[A] == state.positions[A]
    assert len(after.inbound_hashes) == n  # the refused batch wrote nothing


@pytest.mark.parametrize("n", [3, 150])
async def test_transactions_of_batch_files_are_no_resend_candidates(store: Store, n: int) -> None:
    """A transaction split from a batch file is archived with its file's id and left out
    of the inbound hashes (a file is a resend as a whole); a message of its own is not."""
    await store.upsert_participants(PARTICIPANTS)
    alone = message("alone")
    split = [replace(message(f"tx{i}"), batch_file="F1") for i in range(n)]
    await store.commit_batch(Batch(messages=[alone, *split]))
    state = await store.load_state()
    assert state.inbound_hashes == {(A, alone.sha256): "alone"}
    back = await store.fetch_messages(["alone", "tx0"])
    assert [(m.id, m.batch_file) for m in back] == [("alone", None), ("tx0", "F1")]
    assert back[1].raw == split[0].raw and back[1].sha256 == split[0].sha256


async def test_statement_movements_come_in_pages_in_booking_order(store: Store) -> None:
    """Paging by (booking time, seq) gives every movement of the day once, in order, however
    many share one booking time (a batch commits its entries at one instant)."""
    await store.upsert_participants(PARTICIPANTS)
    for round_ in range(3):  # three batches: entries of one batch share their booking time
        book = book_of(await store.load_state())
        entries = [
            e for i in range(7) for e in book.fund(A if i % 2 else B, 10 + i, f"f{round_}-{i}")
        ]
        await store.commit_batch(Batch(journal=entries, deltas=net_deltas(entries)))
    start = datetime.now(UTC) - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(hours=1)
    whole = await store.statement_movements(start, end, limit=1000)
    assert len(whole) == 21
    assert [(m.at, m.seq) for m in whole] == sorted((m.at, m.seq) for m in whole)
    for size in (1, 4, 21):
        got = []
        cursor, after = start, -1
        while page := await store.statement_movements(
            start=cursor, end=end, after=after, limit=size
        ):
            assert len(page) <= size
            got += page
            cursor, after = page[-1].at, page[-1].seq
        assert got == whole
    assert await store.statement_movements(end, end + timedelta(hours=1)) == []
    with pytest.raises(ValueError, match="page size"):
        await store.statement_movements(start, end, limit=0)


async def test_positions_before_an_instant_read_only_the_journal_since(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await fund(store, {A: 700})
    await asyncio.sleep(0.01)
    between = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await fund(store, {A: 300, B: 50})
    zero = {p.id: 0 for p in PARTICIPANTS}
    assert await store.positions_before(between) == {**zero, A: 700}
    assert await store.positions_before(between - timedelta(days=1)) == zero
    later = await store.positions_before(datetime.now(UTC) + timedelta(seconds=5))
    assert later == {**zero, A: 1_000, B: 50}


async def test_sqlite_commits_reach_the_database_file_without_the_automatic_checkpoint(
    tmp_path: Path,
) -> None:
    """The checkpointer thread copies each commit from the WAL into the database file.

    A few small commits are far below SQLite's own checkpoint threshold, so without the
    thread they would stay in the `-wal` file: a copy of the database file alone (what a
    backup that ignores the WAL would take) would not hold them.
    """
    path = tmp_path / "switch.db"
    store = SqliteStore(f"sqlite:///{path}")
    try:
        await store.migrate()
        await store.upsert_participants(PARTICIPANTS)
        await store.commit_batch(Batch(messages=[message(f"m{i}") for i in range(20)]))
        for _ in range(200):
            copy = tmp_path / "copy.db"
            copy.write_bytes(path.read_bytes())
            conn = sqlite3.connect(copy)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                count = (
                    conn.execute("SELECT count(*) FROM messages").fetchone()[0]
                    if "messages" in tables
                    else 0
                )
            finally:
                conn.close()
            if count == 20:
                break
            await asyncio.sleep(0.02)
        assert count == 20
    finally:
        await store.close()
    assert not [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]
