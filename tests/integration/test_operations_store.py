"""The operators' side of the store: tokens, audit log, approvals, and the read queries.

Every test runs on SQLite and on PostgreSQL (see conftest), with the same expectations.
A batch that carries out an operator command commits its participants, approval
decisions and audit records with the rest of it, or nothing at all.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from switch.core import InternalError, Participant, PaymentState
from switch.ledger import JournalEntry, Position, net_deltas
from switch.store import (
    Approval,
    ApprovalDecision,
    ApprovalState,
    ArchivedMessage,
    AuditRecord,
    Batch,
    Direction,
    OperatorRole,
    OperatorToken,
    PaymentQuery,
    PaymentRecord,
    Store,
    open_store,
)
from switch.store.postgres import PostgresStore
from switch.store.sqlite import SqliteStore
from tests.integration.test_store import (
    PARTICIPANTS,
    T0,
    A,
    B,
    C,
    Refused,
    book_of,
    fund,
    message,
    payment,
    raw_execute,
    snapshot,
)

D = "BNKDUS33XXX"
NEW = Participant(id=D, member_id="071000013", name="Bank D")


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def record(
    action: str,
    target: str,
    *,
    actor: str = "tok-admin",
    at: datetime = T0,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    approval: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        at=at,
        actor=actor,
        role="admin",
        action=action,
        target=target,
        before=before,
        after=after,
        approval=approval,
    )


def token(
    tid: str, role: OperatorRole = OperatorRole.VIEWER, *, at: datetime = T0
) -> OperatorToken:
    return OperatorToken(id=tid, name=f"name of {tid}", role=role, created_at=at, created_by="boot")


def approval(
    aid: str,
    *,
    participant: str = A,
    amount: int = 50_000,
    action: str = "fund",
    maker: str = "alice",
    at: datetime = T0,
) -> Approval:
    return Approval(
        id=aid,
        action=action,
        participant=participant,
        amount=amount,
        reference=f"ref-{aid}",
        maker=maker,
        created_at=at,
        expires_at=at + timedelta(hours=1),
    )


def decision(aid: str, state: ApprovalState = ApprovalState.APPROVED) -> ApprovalDecision:
    return ApprovalDecision(id=aid, state=state, checker="bob", at=T0 + timedelta(minutes=5))


def numbered(records: list[AuditRecord], log: list[AuditRecord]) -> list[AuditRecord]:
    """`records` as the log holds them (oldest first): with the seqs the log gave them."""
    return [replace(r, seq=s.seq) for r, s in zip(records, reversed(log), strict=True)]


# --- ping, participants and positions ---------------------------------------------------------


async def test_ping(store: Store) -> None:
    await store.ping()


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:1/none", "sqlite:///no/such/dir/x.db"]
)
async def test_ping_raises_when_the_database_is_unreachable(url: str) -> None:
    unreachable = open_store(url)
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
            await unreachable.ping()
    finally:
        await unreachable.close()


async def test_participants_positions(store: Store) -> None:
    assert await store.participants_positions() == ([], {})
    await store.upsert_participants(reversed(PARTICIPANTS))
    await fund(store, {A: 700, C: 5})
    participants, positions = await store.participants_positions()
    assert participants == sorted(PARTICIPANTS, key=lambda p: p.id)
    assert positions == {A: Position(available=700), B: Position(), C: Position(available=5)}


# --- commit_batch: participants, approvals and audit --------------------------------------------


def test_batch_is_empty_accounts_for_the_operator_fields() -> None:
    assert Batch().is_empty()
    assert not Batch(participants=[NEW]).is_empty()
    assert not Batch(approvals=[decision("ap1")]).is_empty()
    assert not Batch(audit=[record("x", "y")]).is_empty()


async def test_a_batch_onboards_and_funds_a_participant_with_its_audit(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    book = book_of(await store.load_state())
    book.open(D)
    entries = book.fund(D, 9_000, "fund-d")
    audit = [
        record("participant.onboard", D, after={"id": D, "name": "Bank D"}),
        record("participant.fund", D, before={"available": 0}, after={"available": 9_000}),
    ]
    await store.commit_batch(
        Batch(participants=[NEW], journal=entries, deltas=net_deltas(entries), audit=audit)
    )
    participants, positions = await store.participants_positions()
    assert NEW in participants
    assert positions[D] == Position(available=9_000)
    log = await store.audit_log()
    assert log == list(reversed(numbered(audit, log)))
    assert log[0].seq is not None and log[1].seq is not None and log[0].seq > log[1].seq
    assert (await store.conservation()).ok

    # an existing participant changes like upsert_participants changes it
    renamed = replace(NEW, name="Bank D Renamed")
    await store.commit_batch(Batch(participants=[renamed]))
    assert renamed in (await store.participants_positions())[0]
    assert (await store.participants_positions())[1][D] == Position(available=9_000)


async def test_a_batch_carries_out_an_approval(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    created = record("approval.create", "ap1", actor="alice", approval="ap1")
    await store.approval_create(approval("ap1"), created)
    book = book_of(await store.load_state())
    entries = book.fund(A, 50_000, "ref-ap1")
    approved = record("approval.approve", "ap1", actor="bob", approval="ap1")
    await store.commit_batch(
        Batch(
            journal=entries,
            deltas=net_deltas(entries),
            approvals=[decision("ap1")],
            audit=[approved],
        )
    )
    assert await store.approval_get("ap1") == replace(
        approval("ap1"),
        state=ApprovalState.APPROVED,
        checker="bob",
        decided_at=T0 + timedelta(minutes=5),
    )
    assert (await store.participants_positions())[1][A] == Position(available=50_000)
    log = await store.audit_log()
    assert [r.action for r in log] == ["approval.approve", "approval.create"]


@pytest.mark.parametrize("case", ["decided", "unknown", "twice-in-one-batch"])
async def test_a_batch_with_an_approval_not_pending_writes_nothing(store: Store, case: str) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.approval_create(approval("ap1"), record("approval.create", "ap1"))
    await store.approval_create(approval("ap2"), record("approval.create", "ap2"))
    if case == "decided":
        rejected = decision("ap1", ApprovalState.REJECTED)
        assert await store.approval_decide(rejected, record("approval.reject", "ap1"))
        decisions = [decision("ap2"), decision("ap1")]
    elif case == "unknown":
        decisions = [decision("ap2"), decision("ap-none")]
    else:
        decisions = [decision("ap2"), decision("ap2", ApprovalState.REJECTED)]
    before = await snapshot(store)
    log_before = await store.audit_log()
    approvals_before = await store.approvals()
    book = book_of(await store.load_state())
    book.open(D)
    entries = book.fund(A, 50_000, "ref-ap") + book.fund(D, 1, "ref-d")
    batch = Batch(
        participants=[NEW],
        messages=[message("in-x"), message("out-x", Direction.OUT, B)],
        new_payments=[payment("px")],
        journal=entries,
        deltas=net_deltas(entries),
        msg_ids=[(A, "msg-x")],
        approvals=decisions,
        audit=[record("approval.approve", "ap")],
    )
    with pytest.raises(InternalError, match="not pending"):
        await store.commit_batch(batch)
    assert await snapshot(store) == before
    assert await store.audit_log() == log_before
    assert await store.approvals() == approvals_before
    assert await store.fetch_messages(["in-x", "out-x"]) == []
    assert D not in {p.id for p in (await store.participants_positions())[0]}


async def test_plain_batches_keep_their_round_trips(store: Store) -> None:
    """The clearing loop's batches cost what they did: the new fields add no statement."""
    assert isinstance(store, SqliteStore | PostgresStore)
    await store.upsert_participants(PARTICIPANTS)
    trips = store.round_trips
    await store.commit_batch(Batch(messages=[message("i1")], new_payments=[payment("p1")]))
    # PostgreSQL: one statement; SQLite: BEGIN, messages, payments, COMMIT
    assert store.round_trips - trips == (1 if isinstance(store, PostgresStore) else 4)


# --- tokens -----------------------------------------------------------------------------------


async def test_tokens_create_get_list_and_revoke(store: Store) -> None:
    assert await store.tokens() == []
    assert await store.token_get("t1") is None
    t1 = token("t1", OperatorRole.ADMIN, at=T0 + timedelta(seconds=2))
    t2 = token("t2", OperatorRole.OPERATOR, at=T0 + timedelta(seconds=1))
    t3 = replace(token("t3", at=T0 + timedelta(seconds=1)), created_by=None)
    for t in (t1, t2, t3):
        await store.token_create(t, sha(f"secret-{t.id}"), record("token.create", t.id))
    assert await store.token_get("t1") == (t1, sha("secret-t1"))
    assert await store.tokens() == [t2, t3, t1]  # oldest first, then by id

    with pytest.raises(InternalError):
        await store.token_create(token("t1"), sha("other"), record("token.create", "t1"))
    with pytest.raises(InternalError):  # not a SHA-256 in lowercase hex
        await store.token_create(token("t4"), "ABC", record("token.create", "t4"))
    assert await store.token_get("t4") is None
    assert len(await store.audit_log()) == 3  # the refused ones wrote no audit record

    at = T0 + timedelta(minutes=1)
    revoked = await store.token_revoke("t2", at=at, by="t1", audit=record("token.revoke", "t2"))
    assert revoked == replace(t2, revoked_at=at, revoked_by="t1")
    assert await store.token_get("t2") == (revoked, sha("secret-t2"))
    # again: returned unchanged, no audit record
    again = await store.token_revoke(
        "t2", at=at + timedelta(minutes=1), by="t3", audit=record("token.revoke", "t2")
    )
    assert again == revoked
    assert (
        await store.token_revoke("nope", at=at, by="t1", audit=record("token.revoke", "nope"))
        is None
    )
    log = await store.audit_log()
    assert [(r.action, r.target) for r in log] == [
        ("token.revoke", "t2"),
        ("token.create", "t3"),
        ("token.create", "t2"),
        ("token.create", "t1"),
    ]
    assert await store.tokens() == [revoked, t3, t1]


async def test_concurrent_revocations_revoke_once(store: Store) -> None:
    await store.token_create(token("t1"), sha("s"), record("token.create", "t1"))
    others = [open_store(store.url) for _ in range(3)]  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(
            *(
                s.token_revoke(
                    "t1",
                    at=T0 + timedelta(seconds=i),
                    by=f"by-{i}",
                    audit=record("token.revoke", "t1", actor=f"by-{i}"),
                )
                for i, s in enumerate(others)
            )
        )
    finally:
        for s in others:
            await s.close()
    assert all(r is not None and r.revoked_at is not None for r in results)
    assert len({(r.revoked_at, r.revoked_by) for r in results if r}) == 1
    assert [r.action for r in await store.audit_log(action="token.revoke")] == ["token.revoke"]


# --- approvals --------------------------------------------------------------------------------


async def test_approval_decide_only_from_pending(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    assert await store.approval_get("ap1") is None
    await store.approval_create(approval("ap1"), record("approval.create", "ap1"))
    assert await store.approval_get("ap1") == approval("ap1")

    rejected = ApprovalDecision(
        id="ap1", state=ApprovalState.REJECTED, checker="bob", at=T0 + timedelta(minutes=1)
    )
    got = await store.approval_decide(rejected, record("approval.reject", "ap1"))
    assert got == replace(
        approval("ap1"),
        state=ApprovalState.REJECTED,
        checker="bob",
        decided_at=T0 + timedelta(minutes=1),
    )
    assert await store.approval_get("ap1") == got
    # a second decision: nothing changes, no audit record
    assert await store.approval_decide(decision("ap1"), record("approval.approve", "ap1")) is None
    assert await store.approval_decide(decision("nope"), record("approval.approve", "nope")) is None
    assert await store.approval_get("ap1") == got
    assert [r.action for r in await store.audit_log()] == ["approval.reject", "approval.create"]


async def test_concurrent_decisions_take_effect_once(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.approval_create(approval("ap1"), record("approval.create", "ap1"))
    others = [open_store(store.url) for _ in range(3)]  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(
            *(
                s.approval_decide(
                    ApprovalDecision(
                        id="ap1", state=ApprovalState.APPROVED, checker=f"c{i}", at=T0
                    ),
                    record("approval.approve", "ap1", actor=f"c{i}"),
                )
                for i, s in enumerate(others)
            )
        )
    finally:
        for s in others:
            await s.close()
    decided = [r for r in results if r is not None]
    assert len(decided) == 1
    assert await store.approval_get("ap1") == decided[0]
    assert len(await store.audit_log(action="approval.approve")) == 1


async def test_approvals_newest_first_by_state(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    made = [approval(f"ap{i}", at=T0 + timedelta(seconds=i % 3)) for i in range(6)]
    for a in made:
        await store.approval_create(a, record("approval.create", a.id))
    for aid in ("ap1", "ap4"):
        await store.approval_decide(
            decision(aid, ApprovalState.EXPIRED), record("approval.expire", aid)
        )

    def newest_first(approvals: list[Approval]) -> list[str]:
        return [a.id for a in sorted(approvals, key=lambda a: (a.created_at, a.id), reverse=True)]

    assert [a.id for a in await store.approvals()] == newest_first(made)
    assert [a.id for a in await store.approvals(limit=2)] == newest_first(made)[:2]
    pending = await store.approvals(state=ApprovalState.PENDING)
    assert [a.id for a in pending] == [i for i in newest_first(made) if i not in ("ap1", "ap4")]
    assert all(a.state is ApprovalState.PENDING for a in pending)
    expired = await store.approvals(state=ApprovalState.EXPIRED)
    assert [a.id for a in expired] == ["ap4", "ap1"]
    assert await store.approvals(state=ApprovalState.APPROVED) == []
    with pytest.raises(ValueError, match="page size"):
        await store.approvals(limit=0)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(approval("x", amount=0), id="amount-zero"),
        pytest.param(approval("x", action="move"), id="unknown-action"),
        pytest.param(approval("x", participant="BNKZUS33XXX"), id="unknown-participant"),
        pytest.param(replace(approval("x"), expires_at=T0), id="expires-at-creation"),
        pytest.param(replace(approval("x"), state=ApprovalState.APPROVED), id="approved-unchecked"),
    ],
)
async def test_an_approval_the_schema_refuses_writes_nothing(store: Store, bad: Approval) -> None:
    await store.upsert_participants(PARTICIPANTS)
    with pytest.raises(InternalError, match="refused by the database"):
        await store.approval_create(bad, record("approval.create", "x"))
    assert await store.approval_get("x") is None
    assert await store.audit_log() == []


async def test_a_maker_cannot_approve_their_own(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.approval_create(approval("ap1", maker="bob"), record("approval.create", "ap1"))
    with pytest.raises(InternalError):
        await store.approval_decide(decision("ap1"), record("approval.approve", "ap1"))
    assert (await store.approval_get("ap1")) == approval("ap1", maker="bob")
    # the maker may withdraw it (reject) all the same
    assert await store.approval_decide(
        decision("ap1", ApprovalState.REJECTED), record("approval.reject", "ap1")
    )


# --- the audit log ----------------------------------------------------------------------------


async def test_audit_log_pages_filters_and_json(store: Store) -> None:
    written = [
        record(
            ["token.create", "participant.fund", "participant.suspend"][i % 3],
            [A, B, "t1"][i % 2 + (i % 5 == 0)],
            actor=f"op{i % 4}",
            at=T0 + timedelta(seconds=i),
            before=None if i % 2 else {"status": "active", "n": i, "nested": {"list": [1, "é"]}},
            after={"status": "suspended", "ok": True, "none": None},
            approval=f"ap{i}" if i % 3 == 1 else None,
        )
        for i in range(25)
    ]
    await store.commit_batch(Batch(audit=written[:10]))
    for r in written[10:]:
        await store.commit_batch(Batch(audit=[r]))
    log = await store.audit_log(limit=1000)
    assert log == list(reversed(numbered(written, log)))
    seqs = [r.seq for r in log if r.seq is not None]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 25
    assert isinstance(log[0].after, dict)

    # paging by seq: every record once
    seen: list[AuditRecord] = []
    cursor: int | None = None
    while page := await store.audit_log(before=cursor, limit=7):
        seen += page
        cursor = page[-1].seq
    assert seen == log

    for key in ("actor", "action", "target"):
        value = getattr(written[3], key)
        got = await store.audit_log(**{key: value}, limit=1000)
        assert got == [r for r in log if getattr(r, key) == value]
    both = await store.audit_log(actor="op1", action="participant.fund", limit=1000)
    assert both == [r for r in log if r.actor == "op1" and r.action == "participant.fund"]
    assert await store.audit_log(actor="op1", before=log[-1].seq) == []


async def test_the_operators_tables_keep_their_history(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    await store.token_create(token("t1"), sha("s"), record("token.create", "t1"))
    await store.approval_create(approval("ap1"), record("approval.create", "ap1"))
    refused = [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "DELETE FROM operator_tokens",
        "UPDATE operator_tokens SET role = 'admin'",
        "DELETE FROM approvals",
        "UPDATE approvals SET amount = 1",
    ]
    if isinstance(store, PostgresStore):
        refused += [f"TRUNCATE {t}" for t in ("audit_log", "operator_tokens", "approvals")]
    for sql in refused:
        with pytest.raises(Refused, match="refused"):
            await raw_execute(store, sql)
    # the one change a token may receive, once
    await raw_execute(
        store,
        "UPDATE operator_tokens SET revoked_at = '2024-05-01T12:00:00+00:00', revoked_by = 'x'",
    )
    with pytest.raises(Refused, match="refused"):
        await raw_execute(store, "UPDATE operator_tokens SET revoked_by = 'y'")
    assert len(await store.audit_log()) == 2


# --- payments ---------------------------------------------------------------------------------


def _payments() -> list[PaymentRecord]:
    """Twenty payments between A, B and C over ten seconds (some at the same instant)."""
    states = [
        PaymentState.SETTLED,
        PaymentState.REJECTED,
        PaymentState.FORWARDED,
        PaymentState.TIMED_OUT,
    ]
    reasons = {PaymentState.REJECTED: "AM04", PaymentState.TIMED_OUT: "AB05"}
    pairs = [(A, B), (B, A), (A, C), (C, B), (B, None)]
    made = []
    for i in range(20):
        state = states[i % 4]
        debtor, creditor = pairs[i % 5]
        at = T0 + timedelta(seconds=i // 2)  # two payments per instant
        made.append(
            replace(
                payment(f"p{i:02d}", debtor=debtor, creditor=creditor, amount=1_000 * (i + 1)),
                state=state,
                reason=reasons.get(state),
                created_at=at,
                updated_at=at + timedelta(milliseconds=500),
                inbound_id=f"in-p{i:02d}",
            )
        )
    return made


def _newest_first(payments: list[PaymentRecord]) -> list[str]:
    return [p.id for p in sorted(payments, key=lambda p: (p.created_at, p.id), reverse=True)]


async def test_search_payments_by_each_criterion(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    made = _payments()
    await store.commit_batch(Batch(new_payments=made[:7]))
    await store.commit_batch(Batch(new_payments=made[7:]))

    async def ids(**criteria: Any) -> list[str]:
        return [p.id for p in await store.search_payments(PaymentQuery(**criteria))]

    everything = _newest_first(made)
    assert await ids() == everything
    assert await store.search_payments(PaymentQuery(limit=1)) == [
        next(p for p in made if p.id == everything[0])
    ]

    t3, t6 = T0 + timedelta(seconds=3), T0 + timedelta(seconds=6)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"state": PaymentState.REJECTED}, lambda p: p.state is PaymentState.REJECTED),
        ({"participant": A}, lambda p: A in (p.debtor_agent, p.creditor_agent)),
        ({"participant": C}, lambda p: C in (p.debtor_agent, p.creditor_agent)),
        ({"since": t3}, lambda p: p.created_at >= t3),
        ({"until": t6}, lambda p: p.created_at < t6),
        ({"since": t3, "until": t6}, lambda p: t3 <= p.created_at < t6),
        ({"min_amount": 5_000}, lambda p: p.amount >= 5_000),
        ({"max_amount": 5_000}, lambda p: p.amount <= 5_000),
        ({"min_amount": 5_000, "max_amount": 9_000}, lambda p: 5_000 <= p.amount <= 9_000),
        ({"uetr": "uetr-p07"}, lambda p: p.uetr == "uetr-p07"),
        ({"reason": "AB05"}, lambda p: p.reason == "AB05"),
        (
            {"state": PaymentState.SETTLED, "participant": B, "since": t3},
            lambda p: (
                p.state is PaymentState.SETTLED
                and B in (p.debtor_agent, p.creditor_agent)
                and p.created_at >= t3
            ),
        ),
    ]
    for criteria, match in cases:
        want = _newest_first([p for p in made if match(p)])
        assert want, criteria  # every case selects something
        assert want != everything, criteria  # and leaves something out
        assert await ids(**criteria) == want, criteria
    assert await ids(uetr="nope") == []
    assert await ids(participant=A, reason="AB05", state=PaymentState.SETTLED) == []
    with pytest.raises(ValueError, match="page size"):
        await store.search_payments(PaymentQuery(limit=0))


@pytest.mark.parametrize("limit", [1, 3, 4, 7])
async def test_search_payments_pages_by_keyset(store: Store, limit: int) -> None:
    await store.upsert_participants(PARTICIPANTS)
    made = _payments()
    await store.commit_batch(Batch(new_payments=made))
    for criteria in ({}, {"participant": A}, {"state": PaymentState.SETTLED}):
        seen: list[str] = []
        before: tuple[datetime, str] | None = None
        while page := await store.search_payments(
            PaymentQuery(**criteria, limit=limit, before=before)
        ):
            assert len(page) <= limit
            seen += [p.id for p in page]
            before = (page[-1].created_at, page[-1].id)
        assert len(seen) == len(set(seen))  # no row twice
        assert seen == _unpaged(made, criteria)


def _unpaged(made: list[PaymentRecord], criteria: dict[str, Any]) -> list[str]:
    """What one unpaged search with `criteria` returns (computed here)."""
    if "participant" in criteria:
        made = [p for p in made if criteria["participant"] in (p.debtor_agent, p.creditor_agent)]
    if "state" in criteria:
        made = [p for p in made if p.state is criteria["state"]]
    return _newest_first(made)


async def test_payment_by_id_else_by_uetr(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    p1 = payment("p1")
    p2 = payment("p2", uetr="p1", e2e="e2e-2")  # its UETR is p1's id
    await store.commit_batch(Batch(new_payments=[p1, p2]))
    assert await store.payment("p1") == p1  # the id wins
    assert await store.payment("p2") == p2
    assert await store.payment("uetr-p1") == p1
    assert await store.payment("nope") is None


async def test_payment_messages_every_one_once_oldest_first(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    p1 = payment("p1")  # inbound_id "in-p1"
    t = [T0 + timedelta(seconds=i) for i in range(8)]

    def msg(mid: str, direction: Direction, who: str, at: datetime, **kw: Any) -> ArchivedMessage:
        return message(mid, direction, who, at=at, **kw)

    mine = [
        msg("in-p1", Direction.IN, A, t[0]),  # the inbound message: found by inbound_id
        msg("ack", Direction.OUT, A, t[1], in_reply_to="in-p1"),
        msg("fwd", Direction.OUT, B, t[1], payment_id="p1"),  # same instant: by id
        msg("pacs002", Direction.IN, B, t[3], in_reply_to="fwd"),  # reply, no payment_id
        msg("status", Direction.OUT, A, t[4], payment_id="p1", in_reply_to="in-p1"),  # both
        msg("inq", Direction.IN, A, t[5], payment_id="p1", msg_type="pacs.028.001.03"),
        msg("inq-ans", Direction.OUT, A, t[6], payment_id="p1", in_reply_to="inq"),
        msg("inq-ack", Direction.OUT, A, t[7], in_reply_to="inq"),
    ]
    others = [
        msg("in-p2", Direction.IN, A, t[0], payment_id="p2"),
        msg("fwd-p2", Direction.OUT, B, t[2], payment_id="p2"),
        msg("reply-p2", Direction.IN, B, t[3], in_reply_to="fwd-p2"),
        msg("admi", Direction.OUT, A, t[4]),
        # a reply to a reply is not the payment's (it answers the creditor's message)
        msg("deep", Direction.OUT, B, t[5], in_reply_to="pacs002"),
    ]
    await store.commit_batch(
        Batch(messages=others + list(reversed(mine)), new_payments=[p1, payment("p2")])
    )
    got = await store.payment_messages(p1)
    assert [m.id for m in got] == [
        "in-p1",
        "ack",
        "fwd",
        "pacs002",
        "status",
        "inq",
        "inq-ans",
        "inq-ack",
    ]
    assert got == sorted(mine, key=lambda m: (m.at, m.id))
    assert await store.payment_messages(payment("p3")) == []


async def test_recent_finals(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    made = _payments()  # updated at T0 + 0.5 s ... T0 + 9.5 s
    await store.commit_batch(Batch(new_payments=made))
    since = T0 + timedelta(seconds=5, milliseconds=500)  # inclusive: p10 and p11 count
    want: dict[tuple[str, str | None], int] = {}
    for p in made:
        if p.state is not PaymentState.FORWARDED and p.updated_at >= since:
            want[(str(p.state), p.reason)] = want.get((str(p.state), p.reason), 0) + 1
    assert want == {("settled", None): 2, ("rejected", "AM04"): 2, ("timed_out", "AB05"): 3}
    assert await store.recent_finals(since) == want
    assert await store.recent_finals(T0 + timedelta(minutes=1)) == {}


# --- the journal ------------------------------------------------------------------------------


async def test_journal_page_newest_first_by_participant(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    book = book_of(await store.load_state())

    async def commit(*entries: list[JournalEntry]) -> None:
        journal = [e for group in entries for e in group]
        await store.commit_batch(Batch(journal=journal, deltas=net_deltas(journal)))

    await commit(book.fund(A, 50_000, "f1"), book.fund(B, 20_000, "f2"))
    await commit(book.reserve(A, 10_000, "p1"), book.reserve(B, 5_000, "p2"))
    await commit(book.settle(A, C, 10_000, "p1"), book.release(B, 5_000, "p2"))
    await commit(book.defund(C, 1_000, "d1"))
    journal = await store.journal()
    rows = await store.journal_page(limit=1000)
    assert [r.entry for r in rows] == list(reversed(journal))
    assert [r.seq for r in rows] == sorted((r.seq for r in rows), reverse=True)
    assert all(r.at.tzinfo is not None for r in rows)

    paged = []
    cursor: int | None = None
    while page := await store.journal_page(before=cursor, limit=2):
        paged += page
        cursor = page[-1].seq
    assert paged == rows

    def touches(entry: JournalEntry, who: str) -> bool:
        return who in (entry.debit.rpartition(":")[0], entry.credit.rpartition(":")[0])

    for who in (A, B, C):
        want = [r for r in rows if touches(r.entry, who)]
        assert await store.journal_page(participant=who, limit=1000) == want
        assert await store.journal_page(participant=who, limit=1, before=want[0].seq) == want[1:2]
    assert [r.entry.ref for r in await store.journal_page(participant=C)] == ["d1", "p1"]
    assert await store.journal_page(participant="BNKZUS33XXX") == []
