"""The business day and the end-of-day statement arithmetic (switch.ledger.statements).

RULEBOOK §1: a business day rolls over at a configured instant (default 00:00
America/New_York); each participant then gets a statement of its position over the day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from switch.ledger import EntryKind, JournalEntry
from switch.ledger.statements import (
    MAX_CATCH_UP_DAYS,
    BusinessCalendar,
    Movement,
    position_totals,
    positions_before,
    statement_lines,
)

NY = "America/New_York"
A, B = "BNKAUS33XXX", "BNKBUS33XXX"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_midnight_rollover_names_the_day_by_its_date() -> None:
    cal = BusinessCalendar("00:00", NY)
    day = cal.day(date(2026, 11, 21))
    assert (day.start, day.end) == (utc(2026, 11, 21, 5), utc(2026, 11, 22, 5))
    assert cal.day_of(utc(2026, 11, 21, 5)) == day
    assert cal.day_of(utc(2026, 11, 22, 4, 59, 59)) == day
    assert cal.day_of(utc(2026, 11, 22, 5)).date == date(2026, 11, 22)
    assert day.compact == "20261121"


def test_an_evening_rollover_starts_the_next_days_business() -> None:
    cal = BusinessCalendar("19:00", NY)
    day = cal.day(date(2026, 11, 23))  # Monday's business day starts Sunday 19:00
    assert (day.start, day.end) == (utc(2026, 11, 23, 0), utc(2026, 11, 24, 0))
    assert cal.day_of(utc(2026, 11, 23, 23, 59)).date == date(2026, 11, 23)
    assert cal.day_of(utc(2026, 11, 24, 0, 0)).date == date(2026, 11, 24)


def test_daylight_saving_changes_make_23_and_25_hour_days() -> None:
    cal = BusinessCalendar("00:00", NY)
    spring = cal.day(date(2026, 3, 8))
    autumn = cal.day(date(2026, 11, 1))
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert cal.day(date(2026, 3, 9)).start == spring.end  # days tile time: no gap, no overlap


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BusinessCalendar("00:00", NY).day_of(datetime(2026, 1, 1))


@pytest.mark.parametrize("bad", ["24:00", "7pm", "", "12"])
def test_a_malformed_rollover_time_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        BusinessCalendar(bad, NY)


def test_the_last_closed_day_waits_for_the_statement_delay() -> None:
    cal = BusinessCalendar("00:00", NY)
    end = cal.day(date(2026, 11, 21)).end
    delay = timedelta(seconds=10)
    assert cal.last_closed(end + timedelta(seconds=5), delay).date == date(2026, 11, 20)
    assert cal.last_closed(end + timedelta(seconds=10), delay).date == date(2026, 11, 21)
    assert cal.next_rollover(end - timedelta(seconds=1)) == end


def test_due_days_catch_up_oldest_first_and_at_most_a_month() -> None:
    cal = BusinessCalendar("00:00", NY)
    now = cal.day(date(2026, 11, 21)).end + timedelta(minutes=1)
    assert [d.date for d in cal.due(None, now)] == [date(2026, 11, 21)]
    assert cal.due(date(2026, 11, 21), now) == []
    assert [d.date for d in cal.due(date(2026, 11, 18), now)] == [
        date(2026, 11, 19),
        date(2026, 11, 20),
        date(2026, 11, 21),
    ]
    long_ago = cal.due(date(2025, 1, 1), now)
    assert len(long_ago) == MAX_CATCH_UP_DAYS and long_ago[-1].date == date(2026, 11, 21)


def movement(
    seq: int,
    at: datetime,
    kind: EntryKind,
    debit: str,
    credit: str,
    amount: int,
    e2e: str | None = None,
) -> Movement:
    entry = JournalEntry(kind=kind, debit=debit, credit=credit, amount=amount, ref=f"r{seq}")
    return Movement(seq=seq, at=at, entry=entry, end_to_end_id=e2e)


def test_a_statement_shows_each_movement_of_the_position_once() -> None:
    cal = BusinessCalendar("00:00", NY)
    day = cal.day(date(2026, 11, 21))
    t = day.start + timedelta(hours=3)
    moves = [
        movement(1, t, EntryKind.FUND, "scheme:funding", f"{A}:available", 50_000),
        movement(2, t, EntryKind.RESERVE, f"{A}:available", f"{A}:reserved", 1_000),
        movement(3, t, EntryKind.SETTLE, f"{A}:reserved", f"{B}:available", 1_000, "E2E-1"),
        movement(4, t, EntryKind.RESERVE, f"{A}:available", f"{A}:reserved", 700),
        movement(5, t, EntryKind.RELEASE, f"{A}:reserved", f"{A}:available", 700),
        movement(6, t, EntryKind.DEFUND, f"{B}:available", "scheme:funding", 300),
    ]
    got = list(statement_lines(day, {A, B, "BNKCUS33XXX"}, moves))
    a = [line for p, line in got if p == A]
    b = [line for p, line in got if p == B]
    assert [(x.kind, x.credit, x.amount, x.reference) for x in a] == [
        ("fund", True, 50_000, "1"),
        ("settle", False, 1_000, "3"),
    ]
    assert a[1].end_to_end_id == "E2E-1"
    assert [(x.kind, x.credit, x.amount) for x in b] == [
        ("settle", True, 1_000),
        ("defund", False, 300),
    ]
    assert [p for p, _ in got] == [A, A, B, B]  # in journal order; C never moved
    assert [p for p, _ in statement_lines(day, {B}, moves)] == [B, B]  # only those wanted


def test_a_movement_of_another_day_is_refused() -> None:
    day = BusinessCalendar("00:00", NY).day(date(2026, 11, 21))
    late = movement(9, day.end, EntryKind.FUND, "scheme:funding", f"{A}:available", 5)
    with pytest.raises(ValueError, match="not of business day 2026-11-21"):
        list(statement_lines(day, {A}, [late]))


def test_position_totals_add_both_accounts_and_leave_out_the_scheme() -> None:
    credited = {
        f"{A}:available": 900,
        f"{A}:reserved": 200,
        f"{B}:available": 150,
        "scheme:funding": 40,
    }
    debited = {
        "scheme:funding": 1_000,
        f"{A}:available": 200,
        f"{A}:reserved": 150,
        f"{B}:available": 40,
    }
    assert position_totals(credited, debited) == {A: 750, B: 110}


def test_positions_before_take_back_what_was_booked_since() -> None:
    now = {A: 1_000, B: 250, "BNKCUS33XXX": 0}
    credited = {f"{A}:available": 400, f"{B}:reserved": 50, "scheme:funding": 75}
    debited = {f"{A}:reserved": 100, f"{B}:available": 25, f"{A}:available": 50}
    assert positions_before(now, credited, debited) == {A: 750, B: 225, "BNKCUS33XXX": 0}
    assert positions_before(now, {}, {}) == now
