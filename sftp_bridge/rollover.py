"""End of day: each participant's camt.053 statement delivered to its SFTP outbox.

RULEBOOK §1 and §7. When a business day has ended (and `[batch] statement_delay`
seconds more have passed, so that batches committing at the rollover instant are in the
journal), every participant gets a statement of its settlement position over that day:
the opening and closing balances (available + reserved) and one entry per funding,
defunding and settlement it took part in, read from the journal. Processing never
stops: the journal of a closed day no longer changes, so the statement is read while
the engine goes on clearing the next day.

Each statement is a signed BizMsg (AppHdr + camt.053.001.08 Document), delivered
atomically as `camt053_<PARTICIPANT>_<YYYYMMDD>.xml` (kept in the participant's
`archive/` too), and then recorded in the store with its SHA-256 and sequence number.
A crash between delivery and record is harmless: the next rollover finds the file in the
archive, keeps it as it is, and records it. Days missed while the switch was down are
caught up, oldest first (at most `MAX_CATCH_UP_DAYS`). A participant whose position has
never moved gets no statement until it has. A statement's opening that differs from the
closing of the participant's previous statement means the journal of a closed day
changed: that is logged as an error (the journal is the truth the statement shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sftp_bridge.outbox import open_delivery, participant_tree, work_dir
from switch.engine import Engine
from switch.iso20022 import MessageType, build
from switch.iso20022.build import StatementEntry
from switch.iso20022.views import Agent
from switch.ledger.statements import (
    BusinessCalendar,
    BusinessDay,
    DayStatement,
    day_statements,
    position_totals,
)
from switch.security.filesig import SGNTR_PLACEHOLDER, sign_file
from switch.settings import BatchSettings
from switch.store.base import StatementRecord

__all__ = ["Rollover", "StatementOutcome", "statement_file_name"]

log = logging.getLogger("rtpswitch.batch")

_MAX_WAIT = 300.0
"""Longest sleep between two looks at the clock (a clock step is noticed by then)."""


def statement_file_name(participant: str, day: date) -> str:
    """The statement's name in the participant's outbox."""
    return f"camt053_{participant}_{day.strftime('%Y%m%d')}.xml"


@dataclass(frozen=True, slots=True)
class StatementOutcome:
    """A statement delivered and recorded, and where it is in the participant's outbox."""

    record: StatementRecord
    path: Path


class Rollover:
    """The end-of-day statements of one engine's participants (`run`, or `roll` once)."""

    def __init__(
        self,
        engine: Engine,
        root: Path,
        batch: BatchSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.root = Path(root)
        self.calendar = BusinessCalendar(batch.rollover_time, batch.timezone)
        self.delay = timedelta(seconds=batch.statement_delay)
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver the statements of each day as it closes, until `stop` is set."""
        while not stop.is_set():
            try:
                await self.roll()
            except Exception:
                log.exception("end-of-day statements failed; retried shortly")
                wait = 30.0
            else:
                now = self.clock()
                due_at = self.calendar.next_rollover(now - self.delay) + self.delay
                wait = min(_MAX_WAIT, max(0.5, (due_at - now).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def roll(self, now: datetime | None = None) -> list[StatementOutcome]:
        """Deliver and record every statement due at `now` (the clock's time by default)."""
        now = self.clock() if now is None else now
        latest = await self.store.statements_latest()
        participants = sorted(self.engine.ctx.directory)
        due: dict[str, list[BusinessDay]] = {}
        for p in participants:
            last = latest.get(p)
            days = self.calendar.due(None if last is None else last.business_day, now, self.delay)
            if days:
                due[p] = days
        if not due:
            return []
        first = min((d[0] for d in due.values()), key=lambda d: d.date)
        last_day = max((d[-1] for d in due.values()), key=lambda d: d.date)
        credited, debited = await self.store.journal_sums_before(first.start)
        openings = position_totals(credited, debited)
        sequences = {p: r.sequence for p, r in latest.items()}
        done: list[StatementOutcome] = []
        day = first
        while True:
            movements = await self.store.statement_movements(day.start, day.end)
            statements = day_statements(day, participants, openings, movements)
            for p, st in statements.items():
                if day not in due.get(p, ()):
                    continue
                if p not in latest and st.opening == 0 and not st.lines:
                    continue  # never moved: nothing to state yet
                previous = latest.get(p)
                if (
                    previous is not None
                    and previous.business_day == day.date - timedelta(days=1)
                    and previous.closing != st.opening
                ):
                    log.error(
                        "statement of %s for %s opens at %d, but its statement for %s closed "
                        "at %d: the journal of a closed day changed",
                        p,
                        day.date,
                        st.opening,
                        previous.business_day,
                        previous.closing,
                    )
                sequence = sequences.get(p, 0) + 1
                outcome = await asyncio.to_thread(self._deliver, st, sequence, now)
                if await self.store.statement_record(outcome.record):
                    log.info(
                        "statement %s of %s for %s: %d entries, closing %d",
                        outcome.record.file_name,
                        p,
                        day.date,
                        outcome.record.entries,
                        st.closing,
                    )
                    done.append(outcome)
                sequences[p] = sequence
                latest[p] = outcome.record
            openings = {p: st.closing for p, st in statements.items()}
            if day == last_day:
                break
            day = self.calendar.day(day.date + timedelta(days=1))
        return done

    # --- delivery ----------------------------------------------------------------------

    def _deliver(self, st: DayStatement, sequence: int, now: datetime) -> StatementOutcome:
        """Write, sign and deliver one statement (in a worker thread)."""
        p, day = st.participant, st.day
        name = statement_file_name(p, day.date)
        msg_id = f"STMT{day.compact}{p}"
        tree = participant_tree(self.root, p)
        kept = tree / "archive" / name
        path = tree / "outbox" / name
        if kept.exists():  # delivered before a crash, not recorded: keep it as it is
            with contextlib.suppress(FileExistsError):
                os.link(kept, path)
        else:
            # Written out, then signed as a stream: a busy day's statement is far larger
            # than a real-time message, and its signature must not need it as one tree.
            unsigned = work_dir(self.root) / f"{p}.{name}.unsigned"
            try:
                unsigned.write_bytes(self._message(st, sequence, msg_id, now))
                with open_delivery(self.root, p, name) as delivery:
                    security = self.engine.security
                    if security is None:
                        delivery.write(unsigned.read_bytes())
                    else:
                        sign_file(security.signer, unsigned, delivery.write)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    unsigned.unlink()
        sha = hashlib.sha256()
        with open(kept, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        record = StatementRecord(
            participant=p,
            business_day=day.date,
            sequence=sequence,
            msg_id=msg_id,
            file_name=name,
            period_from=day.start,
            period_to=day.end,
            opening=st.opening,
            closing=st.closing,
            entries=len(st.lines),
            sha256=sha.hexdigest(),
            delivered_at=now,
        )
        return StatementOutcome(record, path)

    def _message(self, st: DayStatement, sequence: int, msg_id: str, now: datetime) -> bytes:
        """The statement as a BizMsg from the switch, with an empty Sgntr to sign when the
        switch signs."""
        rules = self.engine.settings.scheme
        document = build.statement(
            msg_id=msg_id,
            statement_id=f"{st.participant}-{st.day.date.isoformat()}",
            sequence=sequence,
            created=now,
            period_from=st.day.start,
            period_to=st.day.end,
            participant_bicfi=st.participant,
            account_id=st.participant,
            servicer_bicfi=rules.switch_bicfi,
            currency=rules.currency,
            exponent=rules.exponent,
            opening=st.opening,
            closing=st.closing,
            entries=[
                StatementEntry(
                    amount=line.amount,
                    credit=line.credit,
                    booked_at=line.booked_at,
                    kind=line.kind,
                    reference=line.reference,
                    end_to_end_id=line.end_to_end_id,
                    tx_id=line.tx_id,
                    uetr=line.uetr,
                )
                for line in st.lines
            ],
        )
        header = build.header(
            sender=self.engine.switch_by_bicfi,
            receiver=Agent(bicfi=st.participant),
            biz_msg_idr=msg_id,
            mtype=MessageType.CAMT_053,
            created=now,
        )
        if self.engine.security is not None:  # where the signature goes (`sign_file`)
            header = header.replace(b"</AppHdr>", SGNTR_PLACEHOLDER + b"</AppHdr>", 1)
        return build.business_message(header, document)
