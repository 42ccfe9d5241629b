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

A statement is written a page of the journal at a time (the day's journal is read once
for the totals its head states, once for its entries) and signed as a stream, so a
busy day's statement takes no more memory than a quiet one's. If the day's journal
changed between the two readings, the statement is not delivered, and is made again
at the next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

from sftp_bridge.outbox import open_delivery, participant_tree, work_dir
from switch.engine import Engine
from switch.iso20022 import MessageType, build
from switch.iso20022.build import StatementEntry, StatementTotals
from switch.iso20022.views import Agent
from switch.ledger.statements import (
    BusinessCalendar,
    BusinessDay,
    StatementLine,
    statement_lines,
)
from switch.metrics import STATEMENTS
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
        """Deliver and record every statement due at `now` (the clock's time by default).

        Each day's journal is read twice, a page at a time: once for each participant's
        totals (which the statement states before its entries), once to write the
        entries into the statements being made. Memory does not grow with the day.
        """
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
        openings = await self.store.positions_before(first.start)
        sequences = {p: r.sequence for p, r in latest.items()}
        failed: set[str] = set()  # not made this time: their later days wait for it
        done: list[StatementOutcome] = []
        day = first
        while True:
            totals = await self._day_totals(day, participants)
            plans: list[_Plan] = []
            for p in participants:
                t = totals[p]
                opening = openings.get(p, 0)
                closing = opening + t.credits - t.debits
                openings[p] = closing
                if day not in due.get(p, ()) or p in failed:
                    continue
                if p not in latest and opening == 0 and not t.entries:
                    continue  # never moved: nothing to state yet
                previous = latest.get(p)
                if (
                    previous is not None
                    and previous.business_day == day.date - timedelta(days=1)
                    and previous.closing != opening
                ):
                    log.error(
                        "statement of %s for %s opens at %d, but its statement for %s closed "
                        "at %d: the journal of a closed day changed",
                        p,
                        day.date,
                        opening,
                        previous.business_day,
                        previous.closing,
                    )
                plans.append(_Plan(p, day, opening, closing, t, sequences.get(p, 0) + 1))
            if plans:
                outcomes = await self._make(plans, now)
                failed |= {x.participant for x in plans} - {o.record.participant for o in outcomes}
                for outcome in outcomes:
                    sequences[outcome.record.participant] = outcome.record.sequence
                    if await self.store.statement_record(outcome.record):
                        STATEMENTS.labels("delivered").inc()
                        log.info(
                            "statement %s of %s for %s: %d entries, closing %d",
                            outcome.record.file_name,
                            outcome.record.participant,
                            day.date,
                            outcome.record.entries,
                            outcome.record.closing,
                        )
                        done.append(outcome)
                    latest[outcome.record.participant] = outcome.record
            if day == last_day:
                break
            day = self.calendar.day(day.date + timedelta(days=1))
        return done

    async def _pages(
        self, day: BusinessDay, wanted: Collection[str]
    ) -> AsyncIterator[list[tuple[str, StatementLine]]]:
        """The lines of `day` on the statements of the `wanted` participants, by page."""
        cursor, after = day.start, -1
        while page := await self.store.statement_movements(
            cursor, day.end, after=after, limit=PAGE
        ):
            yield list(statement_lines(day, wanted, page))
            cursor, after = page[-1].at, page[-1].seq

    async def _day_totals(
        self, day: BusinessDay, participants: Collection[str]
    ) -> dict[str, StatementTotals]:
        """Each participant's credits and debits over `day` (first reading of the day)."""
        totals = {p: StatementTotals() for p in participants}
        async for lines in self._pages(day, totals):
            for p, line in lines:
                totals[p].add(_entry(line))
        return totals

    async def _make(self, plans: list[_Plan], now: datetime) -> list[StatementOutcome]:
        """Write, sign and deliver the statements `plans` of one day (second reading).

        A statement already in the participant's archive (delivered before a crash, not
        recorded) is kept as it is. A statement whose entries no longer add up to the
        totals it was begun with (the journal of the day changed meanwhile) is not
        delivered: it is made again at the next look.
        """
        day = plans[0].day
        try:
            making = {
                plan.participant: plan
                for plan in await asyncio.to_thread(self._begin, plans, now)
                if plan.unsigned is not None
            }
            if making:
                async for lines in self._pages(day, making):
                    await asyncio.to_thread(self._append, making, lines)
            outcomes = []
            for plan in plans:
                try:
                    outcomes.append(await asyncio.to_thread(self._deliver, plan, now))
                except ValueError as exc:
                    STATEMENTS.labels("not_made").inc()
                    log.error(
                        "statement of %s for %s not made: %s", plan.participant, day.date, exc
                    )
            return outcomes
        finally:
            for plan in plans:
                if plan.unsigned is not None:
                    with contextlib.suppress(FileNotFoundError):
                        plan.unsigned.unlink()

    # --- making the files (in worker threads) -------------------------------------------

    def _begin(self, plans: list[_Plan], now: datetime) -> list[_Plan]:
        """Start each statement not already delivered: its head, in a scratch file."""
        for plan in plans:
            p = plan.participant
            if (participant_tree(self.root, p) / "archive" / plan.name).exists():
                continue
            plan.unsigned = work_dir(self.root) / f"{p}.{plan.name}.unsigned"
            with open(plan.unsigned, "wb") as f:
                f.write(self._head(plan, now))
        return plans

    def _append(self, making: dict[str, _Plan], lines: list[tuple[str, StatementLine]]) -> None:
        """Write one page's `lines` into the statements being made."""
        rules = self.engine.settings.scheme
        by_participant: dict[str, list[StatementEntry]] = {}
        for p, line in lines:
            if p in making:
                by_participant.setdefault(p, []).append(_entry(line))
        for p, got in by_participant.items():
            plan = making[p]
            for e in got:
                plan.written.add(e)
            assert plan.unsigned is not None
            with open(plan.unsigned, "ab") as f:
                f.write(
                    build.statement_entries(got, currency=rules.currency, exponent=rules.exponent)
                )

    def _deliver(self, plan: _Plan, now: datetime) -> StatementOutcome:
        """Close, sign and deliver the statement `plan` (or keep the one delivered)."""
        p, day, name = plan.participant, plan.day, plan.name
        tree = participant_tree(self.root, p)
        kept = tree / "archive" / name
        path = tree / "outbox" / name
        if plan.unsigned is None:  # delivered before a crash, not recorded: keep it as it is
            with contextlib.suppress(FileExistsError):
                os.link(kept, path)
        else:
            if plan.written != plan.totals:
                raise ValueError(
                    f"its entries {plan.written} differ from the totals {plan.totals} it was "
                    "begun with: the journal of the day changed while it was written"
                )
            with open(plan.unsigned, "ab") as f:
                f.write(build.STATEMENT_TAIL + _ENVELOPE_CLOSE)
            # Signed as a stream: a busy day's statement is far larger than a real-time
            # message, and its signature must not need it as one tree.
            with open_delivery(self.root, p, name) as delivery:
                security = self.engine.security
                if security is None:
                    with open(plan.unsigned, "rb") as f:
                        while chunk := f.read(1 << 20):
                            delivery.write(chunk)
                else:
                    sign_file(security.signer, plan.unsigned, delivery.write)
        sha = hashlib.sha256()
        with open(kept, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        record = StatementRecord(
            participant=p,
            business_day=day.date,
            sequence=plan.sequence,
            msg_id=plan.msg_id,
            file_name=name,
            period_from=day.start,
            period_to=day.end,
            opening=plan.opening,
            closing=plan.closing,
            entries=plan.totals.entries,
            sha256=sha.hexdigest(),
            delivered_at=now,
        )
        return StatementOutcome(record, path)

    def _head(self, plan: _Plan, now: datetime) -> bytes:
        """The statement's BizMsg from the switch up to its first entry, with an empty
        Sgntr to sign when the switch signs."""
        rules = self.engine.settings.scheme
        p, day = plan.participant, plan.day
        document = build.statement_head(
            msg_id=plan.msg_id,
            statement_id=f"{p}-{day.date.isoformat()}",
            sequence=plan.sequence,
            created=now,
            period_from=day.start,
            period_to=day.end,
            participant_bicfi=p,
            account_id=p,
            servicer_bicfi=rules.switch_bicfi,
            currency=rules.currency,
            exponent=rules.exponent,
            opening=plan.opening,
            closing=plan.closing,
            totals=plan.totals,
        )
        header = build.header(
            sender=self.engine.switch_by_bicfi,
            receiver=Agent(bicfi=p),
            biz_msg_idr=plan.msg_id,
            mtype=MessageType.CAMT_053,
            created=now,
        )
        if self.engine.security is not None:  # where the signature goes (`sign_file`)
            header = header.replace(b"</AppHdr>", SGNTR_PLACEHOLDER + b"</AppHdr>", 1)
        return build.business_message_ends(header)[0] + document


PAGE: Final = 5000
"""Journal entries read at a time while statements are made."""
_ENVELOPE_CLOSE: Final = build.business_message_ends(b"")[1]


@dataclass(slots=True)
class _Plan:
    """One statement to make: whose, of which day, and what its head states."""

    participant: str
    day: BusinessDay
    opening: int
    closing: int
    totals: StatementTotals
    sequence: int
    unsigned: Path | None = None
    """The scratch file it is written into (None: already delivered, kept as it is)."""
    written: StatementTotals = field(default_factory=StatementTotals)
    """What the entries written so far add up to."""

    @property
    def name(self) -> str:
        return statement_file_name(self.participant, self.day.date)

    @property
    def msg_id(self) -> str:
        return f"STMT{self.day.compact}{self.participant}"


def _entry(line: StatementLine) -> StatementEntry:
    return StatementEntry(
        amount=line.amount,
        credit=line.credit,
        booked_at=line.booked_at,
        kind=line.kind,
        reference=line.reference,
        end_to_end_id=line.end_to_end_id,
        tx_id=line.tx_id,
        uetr=line.uetr,
    )
