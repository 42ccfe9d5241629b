"""The PostgreSQL store (asyncpg): the system of record in production.

Theory of operation. A small connection pool (1 to 4 connections, created on first use)
serves every call. `commit_batch` is the hot path and costs at most six round trips
whatever the size of the batch: BEGIN; COPY of the archived messages (the bulk of the
bytes; COPY is much cheaper than array parameters for them, on both ends); one `SELECT ...
FOR UPDATE` locking the touched position rows in participant-id order (the one fixed lock
order, so concurrent writers cannot deadlock); ONE statement that writes everything else;
one for the outbox (the batch's outbound messages in, the earlier batches' sent ones out,
into `sent_marks`); COMMIT. The statement that writes everything else is a chain of
data-modifying CTEs, each fed by `unnest` over column arrays: the net position deltas
(`UPDATE positions ... FROM unnest(...)`, whose CHECK constraints make an overdraft abort
the batch), the funding totals, bulk inserts of payments, journal entries (in batch order)
and msg ids, and one `UPDATE payments ... FROM unnest(...)` for the state changes. CTEs of
one statement do not see each other's rows, so a state change of a payment created in the
same batch is folded into its inserted row here, in Python, and several changes of one
payment collapse to the last. The statement returns how many position rows and payments it
updated; a count that is not what was asked (an unknown participant or payment) rolls the
whole batch back. Integrity violations surface as `InternalError`: the engine checked
everything before, so a refusal here is a broken invariant.

A batch that carries out an operator command (participants to create or change,
approval decisions, audit records) always takes the transaction path, whatever its size:
the participants are upserted first (so a participant created in the batch can be funded
by it), the approval decisions and audit records are written last, and a decision on an
approval that is no longer pending rolls the whole batch back. Batches without them
(every batch of the clearing loop) are written exactly as before.

The operators' writes outside batches (tokens, approvals, each with its audit record)
are transactions of their own; a conditional write that finds nothing to change (a token
already revoked, an approval already decided) writes no audit record either. Their
reads are the queries shared with the SQLite store (`_rows`), one round trip each.

The funding totals live in the one-row `scheme_totals`, updated in the same transaction
as the journal, so `conservation()` is measured from the tables alone. Connections keep
no session state, so the pool does not reset them on release (a round trip saved per
call). `round_trips` counts statements sent (BEGIN, COMMIT and ROLLBACK included) and
`transactions` counts committed write transactions, for benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final, cast

import asyncpg

from switch.core import InternalError, Participant
from switch.directory import Change
from switch.ledger import (
    ConservationReport,
    EntryKind,
    JournalEntry,
    Position,
    lock_order,
    net_funding,
)
from switch.ledger.statements import Movement, positions_before
from switch.store import _rows
from switch.store.base import (
    Approval,
    ApprovalDecision,
    ApprovalState,
    ArchivedMessage,
    AuditRecord,
    Batch,
    BatchFileRecord,
    BatchFileState,
    BatchItemStatus,
    DirectoryDecision,
    DirectorySnapshot,
    JournalRow,
    OperatorToken,
    PaymentQuery,
    PaymentRecord,
    Recalled,
    RecallKeys,
    State,
    StatementRecord,
    Store,
)

__all__ = ["PostgresStore"]

_MIGRATION_LOCK: Final = 0x7274_7073_7769_7463
"""Advisory lock key held while migrating (concurrent migrators wait for each other)."""

_MSG_COLS: Final = _rows.MSG_COLS
_MSG_SELECT: Final = _rows.MSG_SELECT
_PAY_COLS: Final = _rows.PAY_COLS

_LOCK: Final = (
    "SELECT participant FROM positions WHERE participant = ANY($1::text[]) "
    "ORDER BY participant FOR UPDATE"
)

_MSG_COLUMNS: Final = tuple(c.strip() for c in _MSG_COLS.split(","))

_WRITE: Final = f"""
WITH pos AS (
    UPDATE positions p
       SET available = p.available + d.d_available, reserved = p.reserved + d.d_reserved
      FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS d(participant, d_available, d_reserved)
     WHERE p.participant = d.participant
    RETURNING 1
), tot AS (
    UPDATE scheme_totals SET funded = funded + $4::bigint, defunded = defunded + $5::bigint
     WHERE $4::bigint <> 0 OR $5::bigint <> 0
), pay AS (
    INSERT INTO payments ({_PAY_COLS})
    SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::bigint[], $15::text[],
                         $16::text[], $17::timestamptz[], $18::timestamptz[],
                         $19::timestamptz[], $20::text[], $21::text[], $22::text[])
), upd AS (
    UPDATE payments p
       SET state = u.state, reason = u.reason, updated_at = u.updated_at, deadline = u.deadline
      FROM unnest($23::text[], $24::text[], $25::text[], $26::timestamptz[],
                  $27::timestamptz[]) AS u(id, state, reason, updated_at, deadline)
     WHERE p.id = u.id
    RETURNING 1
), jnl AS (
    INSERT INTO journal (kind, debit, credit, amount, ref)
    SELECT kind, debit, credit, amount, ref
      FROM unnest($28::text[], $29::text[], $30::text[], $31::bigint[], $32::text[])
           WITH ORDINALITY AS j(kind, debit, credit, amount, ref, n)
     ORDER BY n
), mid AS (
    INSERT INTO msg_ids (sender, msg_id) SELECT * FROM unnest($33::text[], $34::text[])
)
SELECT (SELECT count(*) FROM pos), (SELECT count(*) FROM upd)
"""

_SINGLE_MAX_MESSAGES: Final = 96
"""Batches with at most this many messages commit as ONE statement (one round trip, its own
implicit transaction): what keeps latency low under light load. Larger batches COPY their
messages, which costs the client far less CPU per message."""

_WRITE_ALL: Final = (
    _WRITE.replace(
        "WITH pos AS (",
        f"""WITH lk AS MATERIALIZED (
    SELECT participant FROM positions WHERE participant = ANY($1::text[])
     ORDER BY participant FOR UPDATE
), msg AS (
    INSERT INTO messages ({_MSG_COLS})
    SELECT * FROM unnest($35::text[], $36::text[], $37::text[], $38::text[], $39::text[],
                         $40::text[], $41::bytea[], $42::timestamptz[], $43::text[],
                         $44::text[], $45::timestamptz[], $46::text[])
), obx AS (
    INSERT INTO outbox (message_id)
    SELECT id FROM unnest($35::text[], $36::text[], $45::timestamptz[]) AS o(id, d, sent_at)
     WHERE d = 'out' AND sent_at IS NULL
), snt AS (
    DELETE FROM outbox o USING unnest($47::text[]) AS s(id)
     WHERE o.message_id = s.id
    RETURNING o.message_id
), mrk AS (
    INSERT INTO sent_marks (message_id, sent_at) SELECT message_id, $48 FROM snt
), pos AS (""",
    )
    .replace(
        "SELECT (SELECT count(*) FROM pos), (SELECT count(*) FROM upd)",
        """SELECT CASE
         WHEN (SELECT count(*) FROM pos) <> $49
         THEN batch_refused('some of the participants have no position')
         WHEN (SELECT count(*) FROM upd) <> $50
         THEN batch_refused('some of the updated payments do not exist')
         ELSE 0
       END""",
    )
    .replace(
        "WHERE p.participant = d.participant\n    RETURNING 1",
        "WHERE p.participant = d.participant\n"
        "       AND d.participant IN (SELECT participant FROM lk)\n    RETURNING 1",
    )
)

_UPSERT_PARTICIPANTS: Final = """
WITH p AS (
    INSERT INTO participants
           (id, member_id, name, status, limit_minor, limit_currency, limit_exponent)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::smallint[])
    ON CONFLICT (id) DO UPDATE
       SET name = excluded.name, status = excluded.status,
           limit_minor = excluded.limit_minor, limit_currency = excluded.limit_currency,
           limit_exponent = excluded.limit_exponent
    RETURNING id
)
INSERT INTO positions (participant) SELECT id FROM p ON CONFLICT (participant) DO NOTHING
"""

_SET_STATUS: Final = "UPDATE participants SET status = $2 WHERE id = $1"
_OUTBOX: Final = """
WITH obx AS (
    INSERT INTO outbox (message_id) SELECT unnest($1::text[])
), snt AS (
    DELETE FROM outbox o USING unnest($2::text[]) AS s(id)
     WHERE o.message_id = s.id
    RETURNING o.message_id
)
INSERT INTO sent_marks (message_id, sent_at) SELECT message_id, $3 FROM snt
"""
"""Puts outbound messages ($1) in the outbox and marks those sent ($2) at $3: the ones
still in the outbox leave it and get a mark, others (already marked, or not outbound)
change nothing. The batch's one statement does the same. Written as joins with the ids:
`id = ANY(...)` let the planner, whose statistics see an almost empty outbox, test every
entry against the whole array of ids, milliseconds per message under load."""

_RESPONSES_TO: Final = f"""
SELECT {_MSG_SELECT} FROM messages
 WHERE direction = 'out' AND participant = $2
   AND (in_reply_to = $1 OR payment_id IN (SELECT id FROM payments WHERE inbound_id = $1))
 ORDER BY at, id
"""

_CONSERVATION: Final = """
SELECT coalesce(sum(available), 0)::bigint, coalesce(sum(reserved), 0)::bigint,
       (SELECT funded FROM scheme_totals), (SELECT defunded FROM scheme_totals)
  FROM positions
"""

_LOAD: Final = (
    "SELECT id, member_id, name, status, limit_minor, limit_currency, limit_exponent "
    "FROM participants ORDER BY id",
    "SELECT participant, available, reserved FROM positions ORDER BY participant",
    "SELECT funded, defunded FROM scheme_totals",
    f"SELECT {_PAY_COLS} FROM payments ORDER BY created_at, id",
    "SELECT sender, msg_id FROM msg_ids",
    "SELECT DISTINCT ON (participant, sha256) participant, sha256, id FROM messages "
    "WHERE direction = 'in' AND batch_file IS NULL ORDER BY participant, sha256, at, id",
    f"SELECT {_MSG_SELECT} FROM messages WHERE id IN (SELECT message_id FROM outbox) "
    "ORDER BY at, id",
    _rows.BATCH_OPEN_PAYMENTS,
)
_LOAD_OPEN: Final = (*_LOAD[:3], _rows.OPEN_PAYMENTS, _rows.ANY_INBOUND, *_LOAD[6:])
"""`_LOAD` for `load_state(open_only=True)`: the open payments, and whether the store holds
any inbound message, instead of every payment, message id and hash."""

_RECALL_FILE: Final = "(SELECT b.file_id FROM batch_items b WHERE b.payment_id = p.id LIMIT 1)"
_RECALL_PAYMENTS: Final = f"""
SELECT {_rows.RECALL_PAY_COLS}, {_RECALL_FILE}
  FROM unnest($1::text[]) AS u (uetr)
 CROSS JOIN LATERAL (SELECT * FROM payments q WHERE q.uetr = u.uetr LIMIT 1) p
UNION ALL
SELECT {_rows.RECALL_PAY_COLS}, {_RECALL_FILE}
  FROM unnest($2::text[], $3::text[], $4::text[]) AS t (debtor, e2e, tx)
 CROSS JOIN LATERAL (
    SELECT * FROM payments q
     WHERE q.debtor_agent = t.debtor AND q.end_to_end_id = t.e2e
       AND COALESCE(q.tx_id, '') = t.tx
     LIMIT 1) p
"""
"""Payments by UETR ($1) or by transaction ($2-$4: debtor agent, EndToEndId, TxId or ''),
with the file each came from (one found both ways comes twice). Every key is one probe
of its unique index (LATERAL ... LIMIT 1): as a plain join the planner may hash the
whole table instead."""

_RECALL_KEYS: Final = """
SELECT 'm', k.sender, k.msg_id, NULL FROM unnest($1::text[], $2::text[]) AS k (sender, msg_id)
 CROSS JOIN LATERAL (
    SELECT 1 FROM msg_ids i WHERE i.sender = k.sender AND i.msg_id = k.msg_id LIMIT 1) f
UNION ALL
SELECT 'h', k.sender, k.sha256, f.id FROM unnest($3::text[], $4::text[]) AS k (sender, sha256)
 CROSS JOIN LATERAL (
    SELECT id FROM messages
     WHERE direction = 'in' AND batch_file IS NULL AND participant = k.sender
       AND sha256 = k.sha256
     ORDER BY at, id LIMIT 1) f
"""
"""Message ids ($1, $2) already used and inbound messages ($3, $4) already archived, with
the first such message's id; one probe of `msg_ids`' key or of `messages_inbound_hash`
per key (a semi-join was planned as a hash of all of `msg_ids`)."""

_BATCH_ITEM_COLUMNS: Final = tuple(c.strip() for c in _rows.BATCH_ITEM_COLS.split(","))


_DIRECTORY_LOCK: Final = 0x52545053_44495200
"""Advisory lock held by every directory writer, so changes commit in seq order."""
_DIR_SINCE: Final = f"SELECT {_rows.DIR_COLS} FROM directory_changes WHERE seq > $1 ORDER BY seq"
_DIR_INSERT: Final = (
    f"INSERT INTO directory_changes ({_rows.DIR_COLS}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, _rows.DIR_WIDTH + 1))})"
)
_NOTIFIED: Final = "UPDATE directory_cursor SET notified = greatest(notified, $1)"

_DECIDE_ALL: Final = """
UPDATE approvals a
   SET state = d.state, checker = d.checker, decided_at = d.at
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS d(id, state, checker, at)
 WHERE a.id = d.id AND a.state = 'pending'
"""
_AUDIT_ALL: Final = f"""
INSERT INTO audit_log ({_rows.AUDIT_INSERT_COLS})
SELECT at, actor, role, action, target, before::jsonb, after::jsonb, approval
  FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[])
       WITH ORDINALITY AS a(at, actor, role, action, target, before, after, approval, n)
 ORDER BY n
"""
"""A batch's audit records, numbered in the batch's order."""


def migrations() -> list[tuple[str, str]]:
    """The PostgreSQL migrations shipped with the package: (version, SQL), in order."""
    return _rows.migrations("postgres")


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: the store keeps no session state, so there is nothing to reset."""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[Any]:
    """Rows transposed into `width` column lists (empty lists for no rows)."""
    if not rows:
        return [()] * width
    return list(zip(*rows, strict=True))


def _day(value: Any) -> date:
    """asyncpg reads and writes a `date` column as a `datetime.date`."""
    return cast(date, value)


def _same(value: Any) -> datetime:
    """asyncpg already returns timestamptz as aware datetimes."""
    return cast(datetime, value)


def _message(r: Any) -> ArchivedMessage:
    return _rows.message(r, _same)


def _payment(r: Any) -> PaymentRecord:
    return _rows.payment(r, _same)


def _write_args(batch: Batch) -> tuple[list[Any], int, int]:
    """The parameters of `_WRITE`, and how many positions and payments it must update."""
    deltas = batch.deltas
    pos_rows = [(p, deltas[p].d_available, deltas[p].d_reserved) for p in lock_order(deltas)]
    funding = net_funding(batch.journal)
    # Last state change per payment; those of payments created in this batch are folded in.
    changes = {u.id: u for u in batch.updates}
    pay_rows = []
    for p in batch.new_payments:
        u = changes.pop(p.id, None)
        state, reason, updated_at, deadline = (
            (p.state, p.reason, p.updated_at, p.deadline)
            if u is None
            else (u.state, u.reason, u.updated_at, u.deadline)
        )
        pay_rows.append(
            (
                p.id,
                p.uetr,
                p.msg_id,
                p.instr_id,
                p.end_to_end_id,
                p.tx_id,
                p.debtor_agent,
                p.creditor_agent,
                p.amount,
                state,
                reason,
                p.created_at,
                updated_at,
                deadline,
                p.inbound_id,
                p.debtor_named_by,
                p.creditor_named_by,
            )
        )
    upd_rows = [(u.id, u.state, u.reason, u.updated_at, u.deadline) for u in changes.values()]
    jnl_rows = [(e.kind, e.debit, e.credit, e.amount, e.ref) for e in batch.journal]
    args = [
        *_columns(pos_rows, 3),
        funding.funded,
        funding.defunded,
        *_columns(pay_rows, 17),
        *_columns(upd_rows, 5),
        *_columns(jnl_rows, 5),
        *_columns(batch.msg_ids, 2),
    ]
    return args, len(pos_rows), len(upd_rows)


class PostgresStore(Store):
    """The store on PostgreSQL, through a small asyncpg pool created on first use."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self.round_trips = 0
        """Statements sent to the server (BEGIN, COMMIT and ROLLBACK included)."""
        self.transactions = 0
        """Write transactions committed."""
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._recall_conns: list[Any] = [None, None]
        self._pool_lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        pool = self._pool
        if pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        reset=_keep_session,
                        server_settings={"application_name": "rtpswitch", "jit": "off"},
                    )
                pool = self._pool
        return pool

    async def migrate(self) -> list[str]:
        """Apply pending versioned migrations (idempotent); return the versions applied."""
        pool = await self._get_pool()
        applied: list[str] = []
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            self.round_trips += 5
            self.transactions += 1
            for version, sql in migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    self.round_trips += 4  # BEGIN, lock, check, COMMIT
                    if await conn.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1", version
                    ):
                        continue  # applied meanwhile by a concurrent migrator
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                    self.round_trips += 2
                self.transactions += 1
                applied.append(version)
        return applied

    async def upsert_participants(self, participants: Iterable[Participant]) -> None:
        """Create participants (with a zero position) or update their name/status/limit."""
        by_id = {p.id: p for p in participants}
        if not by_id:
            return
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            await self._upsert(conn, by_id.values())
        self.transactions += 1

    async def _upsert(self, conn: Any, participants: Iterable[Participant]) -> None:
        """Create or update participants (unique ids), each created with a zero position."""
        rows = [_rows.participant_row(p) for p in participants]
        self.round_trips += 1
        await conn.execute(_UPSERT_PARTICIPANTS, *_columns(rows, 7))

    async def load_state(self, *, open_only: bool = False) -> State:
        """Everything the engine needs to resume, read from one snapshot."""
        pool = await self._get_pool()
        queries = _LOAD_OPEN if open_only else _LOAD
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            results = [await conn.fetch(q) for q in queries]
        self.round_trips += len(queries) + 2
        if open_only:
            parts, positions, totals, payments, inbound, unsent, from_files = results
            msg_ids, hashes, partial = [], [], bool(inbound[0][0])
        else:
            parts, positions, totals, payments, msg_ids, hashes, unsent, from_files = results
            partial = False
        return State(
            participants={r[0]: _rows.participant(r) for r in parts},
            positions={r[0]: Position(available=r[1], reserved=r[2]) for r in positions},
            funded=totals[0][0],
            defunded=totals[0][1],
            payments=[_payment(r) for r in payments],
            msg_ids=frozenset((r[0], r[1]) for r in msg_ids),
            inbound_hashes={(r[0], r[1]): r[2] for r in hashes},
            unsent=[_message(r) for r in unsent],
            batch_payments={r[0]: r[1] for r in from_files},
            partial=partial,
        )

    async def recall(self, keys: RecallKeys) -> Recalled:
        """What the store holds of `keys`: payments on one connection, the other keys on
        another, at once (the engine waits for both before it decides the batch)."""

        async def fetch(which: int, sql: str, *args: Any) -> list[Any]:
            self.round_trips += 1
            conn = await self._recall_connection(which)
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

        async def nothing() -> list[Any]:
            return []

        payments, found = await asyncio.gather(
            fetch(0, _RECALL_PAYMENTS, list(keys.uetrs), *_columns(keys.transactions, 3))
            if keys.uetrs or keys.transactions
            else nothing(),
            fetch(1, _RECALL_KEYS, *_columns(keys.msg_ids, 2), *_columns(keys.hashes, 2))
            if keys.msg_ids or keys.hashes
            else nothing(),
        )
        return _rows.recalled(payments, found, _same)

    async def commit_batch(self, batch: Batch) -> None:
        """Write one batch in one transaction: all of it or (on error) none of it."""
        if batch.is_empty():
            return
        messages = [
            (
                m.id,
                m.direction,
                m.participant,
                m.msg_type,
                m.biz_msg_id,
                m.sha256,
                m.raw,
                m.at,
                m.payment_id,
                m.in_reply_to,
                m.sent_at,
                m.batch_file,
            )
            for m in batch.messages
        ]
        write = bool(
            batch.new_payments or batch.updates or batch.journal or batch.deltas or batch.msg_ids
        )
        if (
            len(messages) <= _SINGLE_MAX_MESSAGES
            and not batch.statuses
            and batch.directory_notified is None
            and not batch.participants
            and not batch.approvals
            and not batch.audit
            and not batch.batch_items
        ):
            await self._commit_single(batch, messages)
            return
        args, n_positions, n_updates = _write_args(batch) if write else ([], 0, 0)
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 2  # BEGIN, and COMMIT or ROLLBACK
            try:
                async with conn.transaction():
                    if batch.participants:
                        await self._upsert(conn, {p.id: p for p in batch.participants}.values())
                    if messages:
                        self.round_trips += 1
                        await conn.copy_records_to_table(
                            "messages", records=messages, columns=_MSG_COLUMNS
                        )
                    if write:
                        if n_positions:
                            self.round_trips += 1
                            await conn.execute(_LOCK, args[0])
                        self.round_trips += 1
                        row = await conn.fetchrow(_WRITE, *args)
                        if row[0] != n_positions:
                            raise InternalError(
                                f"batch refused: {n_positions - row[0]} of the participants "
                                f"{', '.join(args[0])} have no position"
                            )
                        if row[1] != n_updates:
                            raise InternalError(
                                f"batch refused: {n_updates - row[1]} of the updated payments "
                                "do not exist"
                            )
                    unsent = _rows.outbox_ids(batch.messages)
                    if unsent or batch.sent:
                        self.round_trips += 1
                        at = batch.sent_at or datetime.now(UTC)
                        await conn.execute(_OUTBOX, unsent, list(batch.sent), at)
                    for participant, status in batch.statuses:
                        self.round_trips += 1
                        done = await conn.execute(_SET_STATUS, participant, str(status))
                        if done != "UPDATE 1":
                            raise InternalError(f"batch refused: no participant {participant}")
                    if batch.directory_notified is not None:
                        self.round_trips += 1
                        await conn.execute(_NOTIFIED, batch.directory_notified)
                    if batch.approvals:
                        await self._decide_all(conn, batch.approvals)
                    if batch.audit:
                        self.round_trips += 1
                        rows = [_rows.audit_row(a, _same) for a in batch.audit]
                        await conn.execute(_AUDIT_ALL, *_columns(rows, 8))
                    if batch.batch_items:
                        self.round_trips += 1
                        await conn.copy_records_to_table(
                            "batch_items",
                            records=[_rows.batch_item_row(i) for i in batch.batch_items],
                            columns=_BATCH_ITEM_COLUMNS,
                        )
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"batch refused by the database: {exc}") from exc
        self.transactions += 1

    async def _commit_single(self, batch: Batch, messages: list[tuple[Any, ...]]) -> None:
        """A small batch as one statement: atomic on its own, one round trip.

        The statement checks how many positions and payments it updated and refuses
        itself when one is missing, which rolls the whole batch back.
        """
        args, n_positions, n_updates = _write_args(batch)
        args += [
            *_columns(messages, 12),
            list(batch.sent),
            batch.sent_at or datetime.now(UTC),
            n_positions,
            n_updates,
        ]
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            try:
                await conn.fetchrow(_WRITE_ALL, *args)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"batch refused by the database: {exc}") from exc
        self.transactions += 1

    async def mark_sent(self, ids: Sequence[str], at: datetime) -> None:
        """Record that outbound messages `ids` were handed to the transport."""
        if not ids:
            return
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            await conn.execute(_OUTBOX, [], list(ids), at)
        self.transactions += 1

    async def fetch_messages(self, ids: Sequence[str]) -> list[ArchivedMessage]:
        """Archived messages by id (in the order asked; unknown ids are left out)."""
        if not ids:
            return []
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            rows = await conn.fetch(
                f"SELECT {_MSG_SELECT} FROM messages WHERE id = ANY($1::text[])", list(ids)
            )
        found = {r[0]: r for r in rows}
        return [_message(found[i]) for i in ids if i in found]

    async def responses_to(self, inbound_id: str, participant: str) -> list[ArchivedMessage]:
        """Outbound messages to `participant` answering inbound message `inbound_id`."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            rows = await conn.fetch(_RESPONSES_TO, inbound_id, participant)
        return [_message(r) for r in rows]

    async def conservation(self) -> ConservationReport:
        """Conservation measured in the database itself (positions vs funded - defunded)."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            available, reserved, funded, defunded = await conn.fetchrow(_CONSERVATION)
        return ConservationReport(
            total_available=available,
            total_reserved=reserved,
            funded=funded,
            defunded=defunded,
            ok=available + reserved == funded - defunded,
        )

    async def journal(self) -> list[JournalEntry]:
        """The whole journal, in order (for replay checks)."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            rows = await conn.fetch(
                "SELECT kind, debit, credit, amount, ref FROM journal ORDER BY seq"
            )
        return [
            JournalEntry(kind=EntryKind(r[0]), debit=r[1], credit=r[2], amount=r[3], ref=r[4])
            for r in rows
        ]

    async def directory_load(self) -> DirectorySnapshot:
        """The alias directory, for a process that follows it (engine, API)."""
        pool = await self._get_pool()
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(_rows.DIR_LOAD)
            seq = await conn.fetchval(_rows.DIR_LAST)
            notified = await conn.fetchval("SELECT notified FROM directory_cursor")
        self.round_trips += 5
        return DirectorySnapshot(
            changes=[_rows.change(r, _same) for r in rows], seq=seq, notified=notified
        )

    async def directory_changes(self, after: int) -> list[Change]:
        """The directory changes stored after seq `after`, in seq order."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            rows = await conn.fetch(_DIR_SINCE, after)
        self.round_trips += 1
        return [_rows.change(r, _same) for r in rows]

    async def directory_write(
        self, after: int, decide: DirectoryDecision
    ) -> tuple[list[Change], list[Change]]:
        """Decide and append directory changes under the directory's write lock."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 4  # BEGIN, lock, read, COMMIT or ROLLBACK
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _DIRECTORY_LOCK)
                    seen = [_rows.change(r, _same) for r in await conn.fetch(_DIR_SINCE, after)]
                    if seen:
                        last = seen[-1].seq
                    else:
                        self.round_trips += 1
                        last = await conn.fetchval(_rows.DIR_LAST)
                    stored = _rows.numbered(decide(seen), last)
                    if stored:
                        self.round_trips += 1
                        await conn.executemany(
                            _DIR_INSERT, [_rows.change_row(c, _same) for c in stored]
                        )
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"directory change refused by the database: {exc}") from exc
        self.transactions += 1
        return seen, stored

    # --- the operators' side -------------------------------------------------------------

    async def _decide_all(self, conn: Any, decisions: Sequence[ApprovalDecision]) -> None:
        """Decide pending approvals; InternalError if any is unknown or no longer pending."""
        rows = [(d.id, str(d.state), d.checker, d.at) for d in decisions]
        self.round_trips += 1
        done = await conn.execute(_DECIDE_ALL, *_columns(rows, 4))
        n = int(done.rsplit(" ", 1)[1])
        if n != len(rows):
            raise InternalError(
                f"batch refused: {len(rows) - n} of the approvals "
                f"{', '.join(r[0] for r in rows)} are not pending"
            )

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            return cast(list[Any], await conn.fetch(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> None:
        """One write statement in its own transaction; integrity violations as InternalError."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 1
            try:
                await conn.execute(sql, *args)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"refused by the database: {exc}") from exc
        self.transactions += 1

    async def ping(self) -> None:
        """One trivial query; raises if the database cannot be reached."""
        await self._fetch(_rows.PING)

    async def participants_positions(self) -> tuple[list[Participant], dict[str, Position]]:
        """Every participant (by id) and its position, read together."""
        rows = await self._fetch(_rows.PARTICIPANTS_POSITIONS)
        return (
            [_rows.participant(r) for r in rows],
            {r[0]: Position(available=r[7], reserved=r[8]) for r in rows},
        )

    async def journal_page(
        self, *, before: int | None = None, limit: int = 100, participant: str | None = None
    ) -> list[JournalRow]:
        """Journal entries newest first (of `participant`'s accounts when given)."""
        sql, params = _rows.journal_page(before, limit, participant)
        return [_rows.journal_row(r, _same) for r in await self._fetch(sql, *params)]

    async def search_payments(self, query: PaymentQuery) -> list[PaymentRecord]:
        """The payments that match `query`, newest first, at most `query.limit`."""
        sql, params = _rows.payment_search(query, _same)
        return [_payment(r) for r in await self._fetch(sql, *params)]

    async def payment(self, key: str) -> PaymentRecord | None:
        """The payment with id `key`, else the one with UETR `key`, else None."""
        rows = await self._fetch(_rows.PAYMENT, key)
        return _payment(rows[0]) if rows else None

    async def payment_messages(self, payment: PaymentRecord) -> list[ArchivedMessage]:
        """Every archived message of a payment, oldest first, once each."""
        rows = await self._fetch(_rows.PAYMENT_MESSAGES, payment.inbound_id, payment.id)
        return [_message(r) for r in rows]

    async def recent_finals(self, since: datetime) -> dict[tuple[str, str | None], int]:
        """(state, reason) -> payments that reached that final state at or after `since`."""
        rows = await self._fetch(_rows.RECENT_FINALS, since)
        return {(r[0], r[1]): r[2] for r in rows}

    async def _write_pair(
        self, what: str, first: tuple[str, Sequence[Any]], audit: AuditRecord
    ) -> None:
        """One row and its audit record, in one transaction; violations as InternalError."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 4  # BEGIN, the row, the audit record, COMMIT or ROLLBACK
            try:
                async with conn.transaction():
                    await conn.execute(first[0], *first[1])
                    await conn.execute(_rows.AUDIT_INSERT, *_rows.audit_row(audit, _same))
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"{what} refused by the database: {exc}") from exc
        self.transactions += 1

    async def token_create(
        self, token: OperatorToken, secret_sha256: str, audit: AuditRecord
    ) -> None:
        """Store a new token and its audit record together; an id already used refuses."""
        row = _rows.token_row(token, secret_sha256, _same)
        await self._write_pair(f"token {token.id}", (_rows.TOKEN_INSERT, row), audit)

    async def token_get(self, token_id: str) -> tuple[OperatorToken, str] | None:
        """A token and the SHA-256 (hex) of its secret, or None."""
        rows = await self._fetch(_rows.TOKEN_GET, token_id)
        return (_rows.token(rows[0], _same), rows[0][7]) if rows else None

    async def tokens(self) -> list[OperatorToken]:
        """Every token, revoked ones included, oldest first."""
        return [_rows.token(r, _same) for r in await self._fetch(_rows.TOKENS)]

    async def token_revoke(
        self, token_id: str, *, at: datetime, by: str, audit: AuditRecord
    ) -> OperatorToken | None:
        """Revoke a token and write `audit` with it, unless it is unknown or revoked."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 4  # BEGIN, the revocation, the audit or a read, COMMIT
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(_rows.TOKEN_REVOKE, token_id, at, by)
                    if row is not None:
                        await conn.execute(_rows.AUDIT_INSERT, *_rows.audit_row(audit, _same))
                    else:  # a statement of its own: it sees a concurrent revocation
                        row = await conn.fetchrow(_rows.TOKEN_ONE, token_id)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(
                    f"revocation of token {token_id} refused by the database: {exc}"
                ) from exc
        self.transactions += 1
        return None if row is None else _rows.token(row, _same)

    async def audit_log(
        self,
        *,
        before: int | None = None,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditRecord]:
        """Audit records newest first, filtered by each criterion given."""
        sql, params = _rows.audit_page(before, limit, actor, action, target)
        return [_rows.audit(r, _same) for r in await self._fetch(sql, *params)]

    async def approval_create(self, approval: Approval, audit: AuditRecord) -> None:
        """Store a new approval and its audit record together."""
        row = _rows.approval_row(approval, _same)
        await self._write_pair(f"approval {approval.id}", (_rows.APPROVAL_INSERT, row), audit)

    async def approval_get(self, approval_id: str) -> Approval | None:
        """An approval, or None."""
        rows = await self._fetch(_rows.APPROVAL_GET, approval_id)
        return _rows.approval(rows[0], _same) if rows else None

    async def approvals(
        self, *, state: ApprovalState | None = None, limit: int = 100
    ) -> list[Approval]:
        """Approvals newest first, those in `state` when given."""
        sql, params = _rows.approvals_page(state, limit)
        return [_rows.approval(r, _same) for r in await self._fetch(sql, *params)]

    async def approval_decide(
        self, decision: ApprovalDecision, audit: AuditRecord
    ) -> Approval | None:
        """Decide a pending approval and write `audit` with it; None if not pending."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.round_trips += 3  # BEGIN, the decision, COMMIT or ROLLBACK
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(
                        _rows.APPROVAL_DECIDE,
                        decision.id,
                        str(decision.state),
                        decision.checker,
                        decision.at,
                    )
                    if row is not None:
                        self.round_trips += 1
                        await conn.execute(_rows.AUDIT_INSERT, *_rows.audit_row(audit, _same))
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(
                    f"decision on approval {decision.id} refused by the database: {exc}"
                ) from exc
        self.transactions += 1
        return None if row is None else _rows.approval(row, _same)

    async def _recall_connection(self, which: int) -> Any:
        """Connection `which` (0 or 1) of `recall` (made on first use, again if lost).

        The engine waits for each recall before it decides a batch: its two statements
        take no turn at the pool, run side by side, and are planned once (generic plans;
        planned per call, for the arrays at hand, planning took longer than running).
        """
        conn = self._recall_conns[which]
        if conn is None or conn.is_closed():
            conn = self._recall_conns[which] = await asyncpg.connect(
                self.url,
                server_settings={
                    "application_name": "rtpswitch-recall",
                    "jit": "off",
                    "plan_cache_mode": "force_generic_plan",
                },
            )
        return conn

    async def close(self) -> None:
        """Release connections."""
        conns, self._recall_conns = self._recall_conns, [None, None]
        for conn in conns:
            if conn is not None and not conn.is_closed():
                await conn.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # --- the batch channel --------------------------------------------------------------

    async def batch_file_accept(self, record: BatchFileRecord) -> BatchFileRecord | None:
        """Record an accepted file unless it duplicates an accepted one (then return that)."""
        pool = await self._get_pool()
        row = _rows.batch_file_row(record, _same)
        async with pool.acquire() as conn:
            for _ in range(2):
                try:
                    async with conn.transaction():
                        self.round_trips += 4
                        found = await conn.fetch(
                            _rows.BATCH_FILE_DUPLICATE,
                            record.participant,
                            record.msg_id,
                            record.sha256,
                        )
                        if found:
                            return _rows.batch_file(found[0], _same)
                        await conn.execute(_rows.BATCH_FILE_INSERT, *row)
                    self.transactions += 1
                    return None
                except asyncpg.UniqueViolationError:
                    continue  # accepted meanwhile by another session: read it back
        raise InternalError(f"batch file {record.id} could not be recorded")

    async def batch_file_refuse(self, record: BatchFileRecord) -> None:
        """Record a file refused as a whole."""
        await self._execute(_rows.BATCH_FILE_INSERT, *_rows.batch_file_row(record, _same))

    async def batch_file_finish(self, file_id: str, status_file: str, at: datetime) -> None:
        """Mark an accepted file DONE: its status file is delivered."""
        await self._execute(_rows.BATCH_FILE_FINISH, file_id, status_file, at)

    async def batch_files(
        self, *, participant: str | None = None, state: BatchFileState | None = None
    ) -> list[BatchFileRecord]:
        """Batch files taken, oldest first, optionally of one participant and state."""
        if state is None:
            rows = await self._fetch(_rows.BATCH_FILES)
        else:
            rows = await self._fetch(_rows.BATCH_FILES_IN, str(state))
        found = [_rows.batch_file(r, _same) for r in rows]
        return [f for f in found if participant is None or f.participant == participant]

    async def batch_item_indices(self, file_id: str) -> set[int]:
        """The indices of the file's transactions already decided."""
        return {r[0] for r in await self._fetch(_rows.BATCH_ITEM_INDICES, file_id)}

    async def batch_progress(self, file_id: str) -> tuple[int, int]:
        """(transactions decided, of which payments not yet final) of a file."""
        row = (await self._fetch(_rows.BATCH_PROGRESS, file_id))[0]
        return int(row[0]), int(row[1])

    async def batch_statuses(
        self, file_id: str, *, after: int = -1, limit: int = 5000
    ) -> list[BatchItemStatus]:
        """The file's decided transactions with index > `after`, in index order."""
        rows = await self._fetch(_rows.BATCH_STATUSES, file_id, after, _rows.positive_limit(limit))
        return [_rows.batch_status(r, _same) for r in rows]

    # --- end-of-day statements ------------------------------------------------------------

    async def statement_movements(
        self, start: datetime, end: datetime, *, after: int = -1, limit: int = 5000
    ) -> list[Movement]:
        """A page of the fund, defund and settle entries booked in [start, end)."""
        limit = _rows.positive_limit(limit)
        rows = await self._fetch(_rows.STATEMENT_MOVEMENTS, start, end, after, limit)
        return [_rows.movement(r, _same) for r in rows]

    async def positions_before(self, at: datetime) -> dict[str, int]:
        """Each participant's whole position as the entries booked before `at` left it."""
        now_q, credited_q, debited_q = _rows.POSITIONS_BEFORE
        pool = await self._get_pool()
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            now = await conn.fetch(now_q)
            credited = await conn.fetch(credited_q, at)
            debited = await conn.fetch(debited_q, at)
        self.round_trips += 5
        return positions_before(
            {r[0]: int(r[1]) for r in now},
            {r[0]: int(r[1]) for r in credited},
            {r[0]: int(r[1]) for r in debited},
        )

    async def statements_latest(self) -> dict[str, StatementRecord]:
        """Each participant's latest statement."""
        rows = await self._fetch(_rows.STATEMENTS_LATEST)
        return {r[0]: _rows.statement(r, _same, _day) for r in rows}

    async def statement_record(self, record: StatementRecord) -> bool:
        """Record a delivered statement unless that day's is already recorded."""
        pool = await self._get_pool()
        row = _rows.statement_row(record, _same, _day)
        async with pool.acquire() as conn:
            self.round_trips += 1
            try:
                status = await conn.execute(_rows.STATEMENT_INSERT, *row)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InternalError(f"statement refused by the database: {exc}") from exc
        self.transactions += 1
        return bool(status.endswith(" 1"))

    async def statements(self, participant: str | None = None) -> list[StatementRecord]:
        """Statements recorded, by participant then business day."""
        if participant is None:
            rows = await self._fetch(_rows.STATEMENTS)
        else:
            rows = await self._fetch(_rows.STATEMENTS_OF, participant)
        return [_rows.statement(r, _same, _day) for r in rows]
