"""The business day and each participant's end-of-day statement of its position.

RULEBOOK §1: a business day rolls over at a configured instant (default 00:00
America/New_York) without stopping processing, and each participant then receives a
statement (camt.053, RULEBOOK §7) of its settlement position over the day that ended.

A participant's settlement position here is its whole position, available plus reserved:
what it holds in the scheme's joint account. Only funding, defunding and settlement move
it (a reservation or a release moves money between its own two accounts and is not a
statement entry). A day's statement has the position at the day's start (opening), one
entry per movement booked during the day, in the order booked, and the position at the day's
end (closing = opening + credits - debits).

Business days are named by a date. The day that ends at the rollover instant on calendar
date D (local time of the scheme's time zone) is named D, except that with a rollover at
00:00 the day that ends at midnight starting D is named D - 1: a day is named by the
calendar date on which it mostly lies. So with the default, business day 2026-11-21 is
2026-11-21T00:00 to 2026-11-22T00:00 New York time; with a 19:00 rollover it is
2026-11-20T19:00 to 2026-11-21T19:00. A rollover time that a daylight-saving change skips
or repeats on some date resolves as `zoneinfo` resolves it (the earlier of two repeated
instants, a skipped time moved forward by the gap); a day is then 23 or 25 hours long.

Pure: no I/O and no clock; the caller says what time it is.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from switch.ledger.journal import EntryKind, JournalEntry, split_account

__all__ = [
    "MAX_CATCH_UP_DAYS",
    "BusinessCalendar",
    "BusinessDay",
    "Movement",
    "StatementLine",
    "position_totals",
    "positions_before",
    "statement_lines",
]

MAX_CATCH_UP_DAYS: Final = 31
"""The most business days one rollover writes statements for, per participant, oldest first."""

_ONE_DAY: Final = timedelta(days=1)
_MOVES_POSITION: Final = frozenset({EntryKind.FUND, EntryKind.DEFUND, EntryKind.SETTLE})


@dataclass(frozen=True, slots=True)
class BusinessDay:
    """One business day: its name and its span [start, end) as UTC instants."""

    date: date
    start: datetime
    end: datetime

    @property
    def compact(self) -> str:
        """The day's date as YYYYMMDD (for names and identifiers)."""
        return self.date.strftime("%Y%m%d")


class BusinessCalendar:
    """Business days that end at `rollover` ("HH:MM") local to the time zone `tz`."""

    def __init__(self, rollover: str, tz: str) -> None:
        try:
            hh, mm = rollover.split(":")
            self.rollover = time(int(hh), int(mm))
        except ValueError:
            raise ValueError(
                f"rollover time must be HH:MM (00:00 to 23:59): {rollover!r}"
            ) from None
        self.zone = ZoneInfo(tz)
        # With a rollover at midnight, the day named D ends at the boundary of date D + 1.
        self._end_offset = 1 if self.rollover == time(0, 0) else 0

    def _boundary(self, local_date: date) -> datetime:
        """The rollover instant on calendar date `local_date`, in UTC."""
        return datetime.combine(local_date, self.rollover, tzinfo=self.zone).astimezone(UTC)

    def day(self, name: date) -> BusinessDay:
        """The business day named `name`."""
        end_date = name + timedelta(days=self._end_offset)
        return BusinessDay(name, self._boundary(end_date - _ONE_DAY), self._boundary(end_date))

    def day_of(self, instant: datetime) -> BusinessDay:
        """The business day `instant` (timezone-aware) falls in."""
        if instant.tzinfo is None:
            raise ValueError("a business day is found for a timezone-aware instant only")
        local = instant.astimezone(self.zone).date()
        for name in (local - _ONE_DAY, local, local + _ONE_DAY):
            candidate = self.day(name)
            if candidate.start <= instant < candidate.end:
                return candidate
        # Unreachable for a real zone; kept so that a surprise is loud, not a wrong day.
        raise ValueError(f"no business day holds {instant.isoformat()}")

    def last_closed(self, now: datetime, delay: timedelta = timedelta(0)) -> BusinessDay:
        """The latest business day that ended at least `delay` before `now`."""
        current = self.day_of(now - delay)
        return self.day(current.date - _ONE_DAY)

    def due(
        self, last_done: date | None, now: datetime, delay: timedelta = timedelta(0)
    ) -> list[BusinessDay]:
        """The closed business days after `last_done` that still want a statement.

        Oldest first and at most `MAX_CATCH_UP_DAYS` of them (the latest ones); with no
        statement before (`last_done` None), only the last closed day.
        """
        last = self.last_closed(now, delay)
        if last_done is None:
            return [last]
        gap = (last.date - last_done).days
        if gap <= 0:
            return []
        first = last.date - timedelta(days=min(gap, MAX_CATCH_UP_DAYS) - 1)
        return [self.day(first + timedelta(days=i)) for i in range((last.date - first).days + 1)]

    def next_rollover(self, now: datetime) -> datetime:
        """The first rollover instant after `now`."""
        return self.day_of(now).end


@dataclass(frozen=True, slots=True, kw_only=True)
class Movement:
    """A journal entry as a statement reads it: the entry, when it was booked, and for a
    settlement the identifiers of the payment it settled."""

    seq: int
    at: datetime
    entry: JournalEntry
    end_to_end_id: str | None = None
    tx_id: str | None = None
    uetr: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementLine:
    """One entry of a participant's statement: money in (`credit`) or out, > 0."""

    amount: int
    credit: bool
    booked_at: datetime
    kind: str
    reference: str
    end_to_end_id: str | None = None
    tx_id: str | None = None
    uetr: str | None = None


def _owner(account: str) -> str:
    return split_account(account)[0]


def _line(m: Movement, credit: bool) -> StatementLine:
    return StatementLine(
        amount=m.entry.amount,
        credit=credit,
        booked_at=m.at,
        kind=str(m.entry.kind),
        reference=str(m.seq),
        end_to_end_id=m.end_to_end_id,
        tx_id=m.tx_id,
        uetr=m.uetr,
    )


def statement_lines(
    day: BusinessDay, wanted: Container[str], movements: Iterable[Movement]
) -> Iterator[tuple[str, StatementLine]]:
    """(participant, line) for every line that journal `movements` of `day` put on the
    statements of the `wanted` participants, in the order of the movements.

    A settlement is a debit on the debtor agent's statement and a credit on the creditor
    agent's; entries that do not move a position are skipped, and an entry of another
    day is refused (ValueError).
    """
    for m in movements:
        if not day.start <= m.at < day.end:
            raise ValueError(
                f"journal entry {m.seq} at {m.at.isoformat()} is not of business day {day.date}"
            )
        if m.entry.kind not in _MOVES_POSITION:
            continue
        payer, payee = _owner(m.entry.debit), _owner(m.entry.credit)
        if payer in wanted:
            yield payer, _line(m, credit=False)
        if payee in wanted:
            yield payee, _line(m, credit=True)


def positions_before(
    now: Mapping[str, int], credited_since: Mapping[str, int], debited_since: Mapping[str, int]
) -> dict[str, int]:
    """Each participant's whole position at an instant, from its whole position `now` and
    the sums of the journal amounts credited to and debited from each account since that
    instant (read in the same snapshot as `now`): the journal before it is not needed."""
    since = position_totals(credited_since, debited_since)
    return {p: total - since.get(p, 0) for p, total in now.items()}


def position_totals(credited: Mapping[str, int], debited: Mapping[str, int]) -> dict[str, int]:
    """Each participant's whole position (available + reserved) from the sums of the
    journal amounts credited to and debited from each account: what the journal says it
    held at the instant those sums were taken. The scheme's own account is left out."""
    totals: dict[str, int] = {}
    for sums, sign in ((credited, 1), (debited, -1)):
        for account, amount in sums.items():
            owner, side = split_account(account)
            if side == "funding":
                continue
            totals[owner] = totals.get(owner, 0) + sign * amount
    return totals
