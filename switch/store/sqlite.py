"""The SQLite store: the embedded system of record (single node, no server to run).

Theory of operation. One connection, opened on first use, in WAL mode with
`synchronous=FULL` (a committed batch survives a power cut) and foreign keys on. The
stdlib `sqlite3` module blocks, so every call runs as one function in a worker thread
(`asyncio.to_thread`), and an `asyncio.Lock` lets one call at a time use the connection.
The connection is in autocommit mode (`isolation_level=None`) and every write is an
explicit `BEGIN IMMEDIATE ... COMMIT`: the write lock is taken up front, so a write
transaction never fails half-way for lack of it. On a database file, a thread of the
store's own (`_Checkpointer`, on a second connection) copies what each commit put in the
WAL into the database file, so commits do not wait for SQLite's automatic checkpoint
(kept only as a backstop, at a much higher threshold).

`commit_batch` is one such transaction; each kind of row is written by one
`executemany` in the batch's order (participants, messages, new payments, state changes,
the net position deltas in participant-id order, the funding totals, the journal, the
msg ids, then approval decisions and audit records). A CHECK, UNIQUE or trigger
violation, or a delta, state change or approval decision naming a row that does not
exist (or an approval no longer pending), rolls the whole batch back. The operators'
writes outside batches (tokens, approvals, each with its audit record) are transactions
of their own; a conditional write that finds nothing to change (a token already
revoked, an approval already decided) writes no audit record either.

The schema is the PostgreSQL one: datetimes are ISO-8601 UTC text with microseconds
(which sorts in time order), read back as aware datetimes; raw messages are BLOBs;
audit `before`/`after` are JSON text. `round_trips` counts statements executed (an
`executemany` counts once; BEGIN, COMMIT and ROLLBACK included) and `transactions` counts
committed write transactions, as in the PostgreSQL store.

URLs follow the usual convention: `sqlite:///relative/path.db`,
`sqlite:////absolute/path.db`, and `sqlite://:memory:`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final, TypeVar

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

__all__ = ["SqliteStore", "sqlite_path"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

_MEMORY: Final = ":memory:"
_PREFIX: Final = "sqlite:///"
_CHUNK: Final = 500
"""Ids per `IN (...)` query (well under SQLite's bound-parameter limit)."""
_WAL_BACKSTOP: Final = 10_000
"""WAL pages after which a committing connection checkpoints by itself (SQLite's own
automatic checkpoint, 40 MB at 4 KiB pages): it bounds the log should the checkpointer
thread fall behind."""

_MSG_COLS: Final = _rows.MSG_COLS
_MSG_SELECT: Final = _rows.MSG_SELECT
_PAY_COLS: Final = _rows.PAY_COLS

_INSERT_MESSAGE: Final = f"INSERT INTO messages ({_MSG_COLS}) VALUES ({', '.join('?' * 12)})"
_INSERT_PAYMENT: Final = f"INSERT INTO payments ({_PAY_COLS}) VALUES ({', '.join('?' * 17)})"
_UPDATE_PAYMENT: Final = (
    "UPDATE payments SET state = ?, reason = ?, updated_at = ?, deadline = ? WHERE id = ?"
)
_UPDATE_POSITION: Final = (
    "UPDATE positions SET available = available + ?, reserved = reserved + ? WHERE participant = ?"
)
_UPDATE_TOTALS: Final = (
    "UPDATE scheme_totals SET funded = funded + ?, defunded = defunded + ? WHERE id = 1"
)
_INSERT_JOURNAL: Final = (
    "INSERT INTO journal (kind, debit, credit, amount, ref) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_MSG_ID: Final = "INSERT INTO msg_ids (sender, msg_id) VALUES (?, ?)"

_UPSERT_PARTICIPANT: Final = """
INSERT INTO participants
       (id, member_id, name, status, limit_minor, limit_currency, limit_exponent)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE
   SET name = excluded.name, status = excluded.status, limit_minor = excluded.limit_minor,
       limit_currency = excluded.limit_currency, limit_exponent = excluded.limit_exponent
"""
_INSERT_POSITION: Final = (
    "INSERT INTO positions (participant) VALUES (?) ON CONFLICT (participant) DO NOTHING"
)

_SET_STATUS: Final = "UPDATE participants SET status = ? WHERE id = ?"
_INTO_OUTBOX: Final = "INSERT INTO outbox (message_id) VALUES (?)"
_MARK_SENT: Final = (
    "INSERT INTO sent_marks (message_id, sent_at) "
    "SELECT message_id, ?1 FROM outbox WHERE message_id = ?2"
)
"""The mark of a message still in the outbox (others, already marked or not outbound,
get none); `_OUT_OF_OUTBOX` then takes it out."""
_OUT_OF_OUTBOX: Final = "DELETE FROM outbox WHERE message_id = ?2"

_RESPONSES_TO: Final = f"""
SELECT {_MSG_SELECT} FROM messages
 WHERE direction = 'out' AND participant = ?2
   AND (in_reply_to = ?1 OR payment_id IN (SELECT id FROM payments WHERE inbound_id = ?1))
 ORDER BY at, id
"""

_CONSERVATION: Final = """
SELECT coalesce(sum(available), 0), coalesce(sum(reserved), 0),
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
    "SELECT participant, sha256, id FROM messages WHERE direction = 'in' AND batch_file IS NULL "
    "ORDER BY at, id",
    f"SELECT {_MSG_SELECT} FROM messages WHERE id IN (SELECT message_id FROM outbox) "
    "ORDER BY at, id",
    _rows.BATCH_OPEN_PAYMENTS,
)
_LOAD_OPEN: Final = (*_LOAD[:3], _rows.OPEN_PAYMENTS, _rows.ANY_INBOUND, *_LOAD[6:])
"""`_LOAD` for `load_state(open_only=True)`: the open payments, and whether the store holds
any inbound message, instead of every payment, message id and hash."""

_RECALL_PAYMENTS: Final = f"""
SELECT {_rows.RECALL_PAY_COLS}, b.file_id FROM payments p
  LEFT JOIN batch_items b ON b.payment_id = p.id
 WHERE p.id IN (
    SELECT q.id FROM json_each(?) AS u JOIN payments q ON q.uetr = u.value
    UNION
    SELECT q.id FROM json_each(?) AS t
      JOIN payments q ON q.debtor_agent = t.value ->> 0 AND q.end_to_end_id = t.value ->> 1
                     AND COALESCE(q.tx_id, '') = t.value ->> 2)
"""
"""Payments by UETR or by transaction (JSON arrays: UETRs; [debtor agent, EndToEndId,
TxId or ''] each), each probed through its unique index."""

_RECALL_KEYS: Final = """
WITH h AS MATERIALIZED (
    SELECT k.value ->> 0 AS sender, k.value ->> 1 AS sha256,
           (SELECT id FROM messages
             WHERE direction = 'in' AND batch_file IS NULL AND participant = k.value ->> 0
               AND sha256 = k.value ->> 1
             ORDER BY at, id LIMIT 1) AS first
      FROM json_each(?2) AS k)
SELECT 'm', k.value ->> 0, k.value ->> 1, NULL FROM json_each(?1) AS k
 WHERE EXISTS (SELECT 1 FROM msg_ids i WHERE i.sender = k.value ->> 0
                                         AND i.msg_id = k.value ->> 1)
UNION ALL
SELECT 'h', sender, sha256, first FROM h WHERE first IS NOT NULL
"""
"""Message ids already used and inbound messages already archived (JSON arrays of
[sender, msg id] and [sender, sha256]), with the first such message's id."""
_INSERT_BATCH_ITEM: Final = (
    f"INSERT INTO batch_items ({_rows.BATCH_ITEM_COLS}) VALUES ({', '.join('?' * 11)})"
)


def sqlite_path(url: str) -> str:
    """The database file a `sqlite:` URL names (`:memory:` for an in-memory database)."""
    if url in ("sqlite://:memory:", "sqlite:///:memory:"):
        return _MEMORY
    if not url.startswith(_PREFIX) or len(url) == len(_PREFIX):
        raise ValueError(
            f"--store: not a SQLite URL {url!r} (sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:)"
        )
    return url[len(_PREFIX) :]


def migrations() -> list[tuple[str, str]]:
    """The SQLite migrations shipped with the package: (version, SQL), in order."""
    return _rows.migrations("sqlite")


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one at a time (trigger bodies kept whole)."""
    buf: list[str] = []
    for line in script.splitlines(keepends=True):
        buf.append(line)
        text = "".join(buf)
        if sqlite3.complete_statement(text):
            buf = []
            yield text.strip()
    rest = [x for x in buf if x.strip() and not x.lstrip().startswith("--")]
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {''.join(rest)!r}")


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _ts_or_none(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="microseconds")


_dt = datetime.fromisoformat

_DIR_SINCE: Final = f"SELECT {_rows.DIR_COLS} FROM directory_changes WHERE seq > ? ORDER BY seq"
_DIR_INSERT: Final = (
    f"INSERT INTO directory_changes ({_rows.DIR_COLS}) VALUES ({', '.join('?' * _rows.DIR_WIDTH)})"
)
_NOTIFIED: Final = "UPDATE directory_cursor SET notified = max(notified, ?)"

_q = _rows.qmark
_PAYMENT: Final = _q(_rows.PAYMENT)
_PAYMENT_MESSAGES: Final = _q(_rows.PAYMENT_MESSAGES)
_RECENT_FINALS: Final = _q(_rows.RECENT_FINALS)
_TOKEN_INSERT: Final = _q(_rows.TOKEN_INSERT)
_TOKEN_GET: Final = _q(_rows.TOKEN_GET)
_TOKEN_REVOKE: Final = _q(_rows.TOKEN_REVOKE)
_TOKEN_ONE: Final = _q(_rows.TOKEN_ONE)
_AUDIT_INSERT: Final = _q(_rows.AUDIT_INSERT)
_APPROVAL_INSERT: Final = _q(_rows.APPROVAL_INSERT)
_APPROVAL_GET: Final = _q(_rows.APPROVAL_GET)
_APPROVAL_DECIDE: Final = _q(_rows.APPROVAL_DECIDE)
_APPROVALS_DECIDE: Final = _q(_rows.APPROVALS_DECIDE)


def _message(r: Any) -> ArchivedMessage:
    return _rows.message(r, _dt)


def _payment(r: Any) -> PaymentRecord:
    return _rows.payment(r, _dt)


class _Checkpointer:
    """Copies committed WAL frames into the database file, on a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, so
    that commit (and the batch waiting on it) also pays for copying the log into the
    database and syncing it. Here a commit only wakes this thread, which runs a PASSIVE
    checkpoint on a connection of its own: it never blocks the writer, and the writer
    starts the log again from its beginning once everything in it has been copied.
    Durability is unchanged: a commit is durable once its WAL frames are synced.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something was committed: copy it when the thread next gets to it."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the checkpoint under way (if any), then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's own checkpoint still bounds the log
                    _log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()


class SqliteStore(Store):
    """The store on one SQLite database file (or in memory), via a worker thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.round_trips = 0
        """Statements executed (an executemany counts once; BEGIN and COMMIT included)."""
        self.transactions = 0
        """Write transactions committed."""
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._lock = asyncio.Lock()

    # --- plumbing -------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection in a worker thread, one call at a time."""
        async with self._lock:
            return await asyncio.to_thread(self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA busy_timeout = 5000")
                if self.path != _MEMORY:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_BACKSTOP}")
                conn.execute("PRAGMA synchronous = FULL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            if self.path != _MEMORY:
                self._checkpointer = _Checkpointer(self.path)
        return work(conn)

    def _x(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.round_trips += 1
        return conn.execute(sql, params)

    def _xm(self, conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        self.round_trips += 1
        return conn.executemany(sql, rows).rowcount

    def _write(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction; roll back if it raises."""
        self._x(conn, "BEGIN IMMEDIATE")
        try:
            result = work(conn)
            self._x(conn, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                self._x(conn, "ROLLBACK")
            raise
        self.transactions += 1
        if self._checkpointer is not None:
            self._checkpointer.wake()
        return result

    # --- the interface --------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending versioned migrations (idempotent); return the versions applied."""
        return await self._run(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        def bootstrap(conn: sqlite3.Connection) -> set[str]:
            self._x(
                conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version TEXT PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL "
                "DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')))",
            )
            return {r[0] for r in self._x(conn, "SELECT version FROM schema_migrations")}

        done = self._write(conn, bootstrap)
        applied: list[str] = []
        for version, sql in migrations():
            if version in done:
                continue

            def apply(conn: sqlite3.Connection, version: str = version, sql: str = sql) -> bool:
                if self._x(
                    conn, "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone():
                    return False  # applied meanwhile by another process
                for statement in _statements(sql):
                    self._x(conn, statement)
                self._x(conn, "INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                return True

            if self._write(conn, apply):
                applied.append(version)
        return applied

    async def upsert_participants(self, participants: Iterable[Participant]) -> None:
        """Create participants (with a zero position) or update their name/status/limit."""
        by_id = {p.id: p for p in participants}
        if not by_id:
            return
        await self._run(lambda conn: self._write(conn, lambda c: self._upsert(c, by_id)))

    def _upsert(self, conn: sqlite3.Connection, by_id: dict[str, Participant]) -> None:
        """Create or update participants, each created with a zero position."""
        self._xm(conn, _UPSERT_PARTICIPANT, [_rows.participant_row(p) for p in by_id.values()])
        self._xm(conn, _INSERT_POSITION, [(p,) for p in by_id])

    async def load_state(self, *, open_only: bool = False) -> State:
        """Everything the engine needs to resume, read from one snapshot."""
        queries = _LOAD_OPEN if open_only else _LOAD

        def work(conn: sqlite3.Connection) -> list[list[Any]]:
            self._x(conn, "BEGIN")
            try:
                return [self._x(conn, q).fetchall() for q in queries]
            finally:
                self._x(conn, "COMMIT")

        results = await self._run(work)
        if open_only:
            parts, positions, totals, payments, any_inbound, unsent, from_files = results
            msg_ids, hashes, partial = [], [], bool(any_inbound[0][0])
        else:
            parts, positions, totals, payments, msg_ids, hashes, unsent, from_files = results
            partial = False
        inbound: dict[tuple[str, str], str] = {}
        for participant, sha256, msg_id in hashes:
            inbound.setdefault((participant, sha256), msg_id)
        return State(
            participants={r[0]: _rows.participant(r) for r in parts},
            positions={r[0]: Position(available=r[1], reserved=r[2]) for r in positions},
            funded=totals[0][0],
            defunded=totals[0][1],
            payments=[_payment(r) for r in payments],
            msg_ids=frozenset((r[0], r[1]) for r in msg_ids),
            inbound_hashes=inbound,
            unsent=[_message(r) for r in unsent],
            batch_payments={r[0]: r[1] for r in from_files},
            partial=partial,
        )

    async def recall(self, keys: RecallKeys) -> Recalled:
        """What the store holds of `keys`."""
        uetrs, transactions = json.dumps(list(keys.uetrs)), json.dumps(list(keys.transactions))
        msg_ids, hashes = json.dumps(list(keys.msg_ids)), json.dumps(list(keys.hashes))

        def work(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            self._x(conn, "BEGIN")
            try:
                payments = found = []
                if keys.uetrs or keys.transactions:
                    payments = self._x(conn, _RECALL_PAYMENTS, (uetrs, transactions)).fetchall()
                if keys.msg_ids or keys.hashes:
                    found = self._x(conn, _RECALL_KEYS, (msg_ids, hashes)).fetchall()
                return payments, found
            finally:
                self._x(conn, "COMMIT")

        payments, found = await self._run(work)
        return _rows.recalled(payments, found, _dt)

    async def commit_batch(self, batch: Batch) -> None:
        """Write one batch in one transaction: all of it or (on error) none of it."""
        if batch.is_empty():
            return
        deltas = batch.deltas
        funding = net_funding(batch.journal)

        def work(conn: sqlite3.Connection) -> None:
            if batch.participants:
                self._upsert(conn, {p.id: p for p in batch.participants})
            if batch.messages:
                self._xm(
                    conn,
                    _INSERT_MESSAGE,
                    [
                        (
                            m.id,
                            str(m.direction),
                            m.participant,
                            m.msg_type,
                            m.biz_msg_id,
                            m.sha256,
                            m.raw,
                            _ts(m.at),
                            m.payment_id,
                            m.in_reply_to,
                            _ts_or_none(m.sent_at),
                            m.batch_file,
                        )
                        for m in batch.messages
                    ],
                )
                outbox = [(i,) for i in _rows.outbox_ids(batch.messages)]
                if outbox:
                    self._xm(conn, _INTO_OUTBOX, outbox)
            if batch.new_payments:
                self._xm(
                    conn,
                    _INSERT_PAYMENT,
                    [
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
                            str(p.state),
                            p.reason,
                            _ts(p.created_at),
                            _ts(p.updated_at),
                            _ts_or_none(p.deadline),
                            p.inbound_id,
                            p.debtor_named_by,
                            p.creditor_named_by,
                        )
                        for p in batch.new_payments
                    ],
                )
            if batch.updates:
                n = self._xm(
                    conn,
                    _UPDATE_PAYMENT,
                    [
                        (str(u.state), u.reason, _ts(u.updated_at), _ts_or_none(u.deadline), u.id)
                        for u in batch.updates
                    ],
                )
                if n != len(batch.updates):
                    raise InternalError(
                        f"batch refused: {len(batch.updates) - n} of the updated payments "
                        "do not exist"
                    )
            if deltas:
                order = lock_order(deltas)
                n = self._xm(
                    conn,
                    _UPDATE_POSITION,
                    [(deltas[p].d_available, deltas[p].d_reserved, p) for p in order],
                )
                if n != len(order):
                    raise InternalError(
                        f"batch refused: {len(order) - n} of the participants "
                        f"{', '.join(order)} have no position"
                    )
            if funding.funded or funding.defunded:
                self._x(conn, _UPDATE_TOTALS, (funding.funded, funding.defunded))
            if batch.journal:
                self._xm(
                    conn,
                    _INSERT_JOURNAL,
                    [(str(e.kind), e.debit, e.credit, e.amount, e.ref) for e in batch.journal],
                )
            if batch.msg_ids:
                self._xm(conn, _INSERT_MSG_ID, batch.msg_ids)
            if batch.sent:
                sent_at = _ts(batch.sent_at or datetime.now(UTC))
                self._mark(conn, [(sent_at, i) for i in batch.sent])
            for participant, status in batch.statuses:
                if self._xm(conn, _SET_STATUS, [(str(status), participant)]) != 1:
                    raise InternalError(f"batch refused: no participant {participant}")
            if batch.directory_notified is not None:
                self._x(conn, _NOTIFIED, (batch.directory_notified,))
            if batch.approvals:
                self._decide_all(conn, batch.approvals)
            if batch.audit:
                self._xm(conn, _AUDIT_INSERT, [_rows.audit_row(a, _ts) for a in batch.audit])
            if batch.batch_items:
                self._xm(
                    conn, _INSERT_BATCH_ITEM, [_rows.batch_item_row(i) for i in batch.batch_items]
                )

        try:
            await self._run(lambda conn: self._write(conn, work))
        except sqlite3.IntegrityError as exc:
            raise InternalError(f"batch refused by the database: {exc}") from exc

    async def mark_sent(self, ids: Sequence[str], at: datetime) -> None:
        """Record that outbound messages `ids` were handed to the transport."""
        if not ids:
            return
        sent_at = _ts(at)
        rows = [(sent_at, i) for i in ids]
        await self._run(lambda conn: self._write(conn, lambda c: self._mark(c, rows)))

    def _mark(self, conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
        """Mark sent the messages of `rows` (sent time, id) still in the outbox."""
        self._xm(conn, _MARK_SENT, rows)
        self._xm(conn, _OUT_OF_OUTBOX, rows)

    async def fetch_messages(self, ids: Sequence[str]) -> list[ArchivedMessage]:
        """Archived messages by id (in the order asked; unknown ids are left out)."""
        if not ids:
            return []
        wanted = list(dict.fromkeys(ids))

        def work(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {_MSG_SELECT} FROM messages WHERE id IN ({marks})"
                rows.extend(self._x(conn, sql, chunk).fetchall())
            return rows

        found = {r[0]: r for r in await self._run(work)}
        return [_message(found[i]) for i in ids if i in found]

    async def responses_to(self, inbound_id: str, participant: str) -> list[ArchivedMessage]:
        """Outbound messages to `participant` answering inbound message `inbound_id`."""
        rows = await self._run(
            lambda conn: self._x(conn, _RESPONSES_TO, (inbound_id, participant)).fetchall()
        )
        return [_message(r) for r in rows]

    async def conservation(self) -> ConservationReport:
        """Conservation measured in the database itself (positions vs funded - defunded)."""
        row = await self._run(lambda conn: self._x(conn, _CONSERVATION).fetchone())
        available, reserved, funded, defunded = row
        return ConservationReport(
            total_available=available,
            total_reserved=reserved,
            funded=funded,
            defunded=defunded,
            ok=available + reserved == funded - defunded,
        )

    async def journal(self) -> list[JournalEntry]:
        """The whole journal, in order (for replay checks)."""
        rows = await self._run(
            lambda conn: self._x(
                conn, "SELECT kind, debit, credit, amount, ref FROM journal ORDER BY seq"
            ).fetchall()
        )
        return [
            JournalEntry(kind=EntryKind(r[0]), debit=r[1], credit=r[2], amount=r[3], ref=r[4])
            for r in rows
        ]

    async def directory_load(self) -> DirectorySnapshot:
        """The alias directory, for a process that follows it (engine, API)."""

        def work(conn: sqlite3.Connection) -> DirectorySnapshot:
            self._x(conn, "BEGIN")
            try:
                rows = self._x(conn, _rows.DIR_LOAD).fetchall()
                seq = self._x(conn, _rows.DIR_LAST).fetchone()[0]
                notified = self._x(conn, "SELECT notified FROM directory_cursor").fetchone()[0]
            finally:
                self._x(conn, "COMMIT")
            changes = [_rows.change(r, _dt) for r in rows]
            return DirectorySnapshot(changes=changes, seq=seq, notified=notified)

        return await self._run(work)

    async def directory_changes(self, after: int) -> list[Change]:
        """The directory changes stored after seq `after`, in seq order."""

        def work(conn: sqlite3.Connection) -> list[Change]:
            return [_rows.change(r, _dt) for r in self._x(conn, _DIR_SINCE, (after,))]

        return await self._run(work)

    async def directory_write(
        self, after: int, decide: DirectoryDecision
    ) -> tuple[list[Change], list[Change]]:
        """Decide and append directory changes under SQLite's write lock."""

        def work(conn: sqlite3.Connection) -> tuple[list[Change], list[Change]]:
            seen = [_rows.change(r, _dt) for r in self._x(conn, _DIR_SINCE, (after,))]
            last = seen[-1].seq if seen else self._x(conn, _rows.DIR_LAST).fetchone()[0]
            stored = _rows.numbered(decide(seen), last)
            if stored:
                self._xm(conn, _DIR_INSERT, [_rows.change_row(c, _ts) for c in stored])
            return seen, stored

        try:
            return await self._run(lambda conn: self._write(conn, work))
        except sqlite3.IntegrityError as exc:
            raise InternalError(f"directory change refused by the database: {exc}") from exc

    # --- the operators' side -------------------------------------------------------------

    def _decide_all(self, conn: sqlite3.Connection, decisions: Sequence[ApprovalDecision]) -> None:
        """Decide pending approvals; InternalError if any is unknown or no longer pending."""
        rows = [(d.id, str(d.state), d.checker, _ts(d.at)) for d in decisions]
        n = self._xm(conn, _APPROVALS_DECIDE, rows)
        if n != len(rows):
            raise InternalError(
                f"batch refused: {len(rows) - n} of the approvals "
                f"{', '.join(r[0] for r in rows)} are not pending"
            )

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._run(lambda conn: self._x(conn, sql, params).fetchall())

    async def _write_one(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """`work` in one write transaction; integrity violations as InternalError."""
        try:
            return await self._run(lambda conn: self._write(conn, work))
        except sqlite3.IntegrityError as exc:
            raise InternalError(f"{what} refused by the database: {exc}") from exc

    async def ping(self) -> None:
        """One trivial query; raises if the database cannot be reached."""
        await self._read(_rows.PING)

    async def participants_positions(self) -> tuple[list[Participant], dict[str, Position]]:
        """Every participant (by id) and its position, read together."""
        rows = await self._read(_rows.PARTICIPANTS_POSITIONS)
        return (
            [_rows.participant(r) for r in rows],
            {r[0]: Position(available=r[7], reserved=r[8]) for r in rows},
        )

    async def journal_page(
        self, *, before: int | None = None, limit: int = 100, participant: str | None = None
    ) -> list[JournalRow]:
        """Journal entries newest first (of `participant`'s accounts when given)."""
        sql, params = _rows.journal_page(before, limit, participant)
        return [_rows.journal_row(r, _dt) for r in await self._read(_q(sql), params)]

    async def search_payments(self, query: PaymentQuery) -> list[PaymentRecord]:
        """The payments that match `query`, newest first, at most `query.limit`."""
        sql, params = _rows.payment_search(query, _ts)
        return [_payment(r) for r in await self._read(_q(sql), params)]

    async def payment(self, key: str) -> PaymentRecord | None:
        """The payment with id `key`, else the one with UETR `key`, else None."""
        rows = await self._read(_PAYMENT, (key,))
        return _payment(rows[0]) if rows else None

    async def payment_messages(self, payment: PaymentRecord) -> list[ArchivedMessage]:
        """Every archived message of a payment, oldest first, once each."""
        rows = await self._read(_PAYMENT_MESSAGES, (payment.inbound_id, payment.id))
        return [_message(r) for r in rows]

    async def recent_finals(self, since: datetime) -> dict[tuple[str, str | None], int]:
        """(state, reason) -> payments that reached that final state at or after `since`."""
        rows = await self._read(_RECENT_FINALS, (_ts(since),))
        return {(r[0], r[1]): r[2] for r in rows}

    async def token_create(
        self, token: OperatorToken, secret_sha256: str, audit: AuditRecord
    ) -> None:
        """Store a new token and its audit record together; an id already used refuses."""
        row = _rows.token_row(token, secret_sha256, _ts)

        def work(conn: sqlite3.Connection) -> None:
            self._x(conn, _TOKEN_INSERT, row)
            self._x(conn, _AUDIT_INSERT, _rows.audit_row(audit, _ts))

        await self._write_one(work, f"token {token.id}")

    async def token_get(self, token_id: str) -> tuple[OperatorToken, str] | None:
        """A token and the SHA-256 (hex) of its secret, or None."""
        rows = await self._read(_TOKEN_GET, (token_id,))
        return (_rows.token(rows[0], _dt), rows[0][7]) if rows else None

    async def tokens(self) -> list[OperatorToken]:
        """Every token, revoked ones included, oldest first."""
        return [_rows.token(r, _dt) for r in await self._read(_rows.TOKENS)]

    async def token_revoke(
        self, token_id: str, *, at: datetime, by: str, audit: AuditRecord
    ) -> OperatorToken | None:
        """Revoke a token and write `audit` with it, unless it is unknown or revoked."""

        def work(conn: sqlite3.Connection) -> Any:
            rows = self._x(conn, _TOKEN_REVOKE, (token_id, _ts(at), by)).fetchall()
            if rows:
                self._x(conn, _AUDIT_INSERT, _rows.audit_row(audit, _ts))
                return rows[0]
            return self._x(conn, _TOKEN_ONE, (token_id,)).fetchone()

        row = await self._write_one(work, f"revocation of token {token_id}")
        return None if row is None else _rows.token(row, _dt)

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
        return [_rows.audit(r, _dt) for r in await self._read(_q(sql), params)]

    async def approval_create(self, approval: Approval, audit: AuditRecord) -> None:
        """Store a new approval and its audit record together."""
        row = _rows.approval_row(approval, _ts)

        def work(conn: sqlite3.Connection) -> None:
            self._x(conn, _APPROVAL_INSERT, row)
            self._x(conn, _AUDIT_INSERT, _rows.audit_row(audit, _ts))

        await self._write_one(work, f"approval {approval.id}")

    async def approval_get(self, approval_id: str) -> Approval | None:
        """An approval, or None."""
        rows = await self._read(_APPROVAL_GET, (approval_id,))
        return _rows.approval(rows[0], _dt) if rows else None

    async def approvals(
        self, *, state: ApprovalState | None = None, limit: int = 100
    ) -> list[Approval]:
        """Approvals newest first, those in `state` when given."""
        sql, params = _rows.approvals_page(state, limit)
        return [_rows.approval(r, _dt) for r in await self._read(_q(sql), params)]

    async def approval_decide(
        self, decision: ApprovalDecision, audit: AuditRecord
    ) -> Approval | None:
        """Decide a pending approval and write `audit` with it; None if not pending."""
        params = (decision.id, str(decision.state), decision.checker, _ts(decision.at))

        def work(conn: sqlite3.Connection) -> Any:
            rows = self._x(conn, _APPROVAL_DECIDE, params).fetchall()
            if rows:
                self._x(conn, _AUDIT_INSERT, _rows.audit_row(audit, _ts))
                return rows[0]
            return None

        row = await self._write_one(work, f"decision on approval {decision.id}")
        return None if row is None else _rows.approval(row, _dt)

    async def close(self) -> None:
        """Release the connection."""
        async with self._lock:
            conn, self._conn = self._conn, None
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)
            if conn is not None:
                await asyncio.to_thread(conn.close)

    # --- the batch channel --------------------------------------------------------------

    async def batch_file_accept(self, record: BatchFileRecord) -> BatchFileRecord | None:
        """Record an accepted file unless it duplicates an accepted one (then return that)."""
        row = _rows.batch_file_row(record, _ts)

        def work(conn: sqlite3.Connection) -> BatchFileRecord | None:
            found = self._x(
                conn,
                _q(_rows.BATCH_FILE_DUPLICATE),
                (record.participant, record.msg_id, record.sha256),
            ).fetchall()
            if found:
                return _rows.batch_file(found[0], _dt)
            self._x(conn, _q(_rows.BATCH_FILE_INSERT), row)
            return None

        return await self._write_one(work, f"batch file {record.id}")

    async def batch_file_refuse(self, record: BatchFileRecord) -> None:
        """Record a file refused as a whole."""
        row = _rows.batch_file_row(record, _ts)
        await self._write_one(
            lambda c: self._x(c, _q(_rows.BATCH_FILE_INSERT), row), f"batch file {record.id}"
        )

    async def batch_file_finish(self, file_id: str, status_file: str, at: datetime) -> None:
        """Mark an accepted file DONE: its status file is delivered."""
        args = (file_id, status_file, _ts(at))
        await self._write_one(
            lambda c: self._x(c, _q(_rows.BATCH_FILE_FINISH), args), f"batch file {file_id}"
        )

    async def batch_files(
        self, *, participant: str | None = None, state: BatchFileState | None = None
    ) -> list[BatchFileRecord]:
        """Batch files taken, oldest first, optionally of one participant and state."""
        if state is None:
            rows = await self._read(_rows.BATCH_FILES)
        else:
            rows = await self._read(_q(_rows.BATCH_FILES_IN), (str(state),))
        found = [_rows.batch_file(r, _dt) for r in rows]
        return [f for f in found if participant is None or f.participant == participant]

    async def batch_item_indices(self, file_id: str) -> set[int]:
        """The indices of the file's transactions already decided."""
        return {r[0] for r in await self._read(_q(_rows.BATCH_ITEM_INDICES), (file_id,))}

    async def batch_progress(self, file_id: str) -> tuple[int, int]:
        """(transactions decided, of which payments not yet final) of a file."""
        row = (await self._read(_q(_rows.BATCH_PROGRESS), (file_id,)))[0]
        return int(row[0]), int(row[1])

    async def batch_statuses(
        self, file_id: str, *, after: int = -1, limit: int = 5000
    ) -> list[BatchItemStatus]:
        """The file's decided transactions with index > `after`, in index order."""
        args = (file_id, after, _rows.positive_limit(limit))
        rows = await self._read(_q(_rows.BATCH_STATUSES), args)
        return [_rows.batch_status(r, _dt) for r in rows]

    # --- end-of-day statements ------------------------------------------------------------

    async def statement_movements(
        self, start: datetime, end: datetime, *, after: int = -1, limit: int = 5000
    ) -> list[Movement]:
        """A page of the fund, defund and settle entries booked in [start, end)."""
        limit = _rows.positive_limit(limit)
        rows = await self._read(_q(_rows.STATEMENT_MOVEMENTS), (_ts(start), _ts(end), after, limit))
        return [_rows.movement(r, _dt) for r in rows]

    async def positions_before(self, at: datetime) -> dict[str, int]:
        """Each participant's whole position as the entries booked before `at` left it."""
        now_q, credited_q, debited_q = (_q(q) for q in _rows.POSITIONS_BEFORE)

        def work(conn: sqlite3.Connection) -> list[list[Any]]:
            self._x(conn, "BEGIN")
            try:
                return [
                    self._x(conn, now_q).fetchall(),
                    self._x(conn, credited_q, (_ts(at),)).fetchall(),
                    self._x(conn, debited_q, (_ts(at),)).fetchall(),
                ]
            finally:
                self._x(conn, "COMMIT")

        now, credited, debited = await self._run(work)
        return positions_before(
            {r[0]: int(r[1]) for r in now},
            {r[0]: int(r[1]) for r in credited},
            {r[0]: int(r[1]) for r in debited},
        )

    async def statements_latest(self) -> dict[str, StatementRecord]:
        """Each participant's latest statement."""
        rows = await self._read(_rows.STATEMENTS_LATEST)
        return {r[0]: _rows.statement(r, _dt, date.fromisoformat) for r in rows}

    async def statement_record(self, record: StatementRecord) -> bool:
        """Record a delivered statement unless that day's is already recorded."""
        row = _rows.statement_row(record, _ts, date.isoformat)
        n = await self._write_one(
            lambda c: self._x(c, _q(_rows.STATEMENT_INSERT), row).rowcount,
            f"statement of {record.participant} for {record.business_day}",
        )
        return bool(n == 1)

    async def statements(self, participant: str | None = None) -> list[StatementRecord]:
        """Statements recorded, by participant then business day."""
        if participant is None:
            rows = await self._read(_rows.STATEMENTS)
        else:
            rows = await self._read(_q(_rows.STATEMENTS_OF), (participant,))
        return [_rows.statement(r, _dt, date.fromisoformat) for r in rows]
