"""`rtpswitch db migrate`, `ledger check` and `participant fund|defund` on real stores."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from switch.cli import admin
from switch.core import Participant
from switch.ledger import EntryKind, Position, PositionDelta
from switch.store import Batch, open_store, postgres, sqlite
from switch.store.testing import reset_database

A, B = "BNKAUS33XXX", "BNKBUS33XXX"
PARTICIPANTS = [
    Participant(id=A, member_id="021000021", name="Bank A"),
    Participant(id=B, member_id="011000015", name="Bank B"),
]


def cli(*argv: str) -> int:
    """Run one admin sub-command as `rtpswitch` would."""
    parser = argparse.ArgumentParser(prog="rtpswitch")
    sub = parser.add_subparsers(dest="command", required=True)
    admin.register(sub)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


def add_participants(url: str) -> None:
    async def work() -> None:
        store = open_store(url)
        try:
            await store.upsert_participants(PARTICIPANTS)
        finally:
            await store.close()

    asyncio.run(work())


def positions(url: str) -> dict[str, Position]:
    async def work() -> dict[str, Position]:
        store = open_store(url)
        try:
            return dict((await store.load_state()).positions)
        finally:
            await store.close()

    return asyncio.run(work())


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A migrated SQLite store with participants A and B."""
    url = f"sqlite:///{tmp_path / 'switch.db'}"
    assert cli("db", "migrate", "--store", url) == 0
    add_participants(url)
    return url


def test_migrate_prints_versions_then_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("db", "migrate", "--store", url) == 0
    applied = "".join(f"applied {v}\n" for v, _ in sqlite.migrations())
    assert applied.startswith("applied 0001_init\napplied 0002_directory\n")
    assert capsys.readouterr().out == applied
    assert cli("db", "migrate", "--store", url) == 0
    assert capsys.readouterr().out == "up to date\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "migrate", "--store", "mysql://x"],
        ["db", "migrate", "--store", "sqlite:relative.db"],
        ["ledger", "check", "--store", "bogus"],
        ["participant", "fund", "--store", "nope://", A, "1.00"],
    ],
)
def test_bad_store_url(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--store" in err


def test_missing_sqlite_database_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.db"
    assert cli("ledger", "check", "--store", f"sqlite:///{path}") == 2
    assert "--store: no database" in capsys.readouterr().err
    assert not path.exists()


def test_fund_defund_and_ledger_check(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("participant", "fund", "--store", url, A, "1000.00") == 0
    assert cli("participant", "fund", "--store", url, "011000015", "250.5", "--ref", "r1") == 0
    assert cli("participant", "defund", "--store", url, A, "0.01") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"funded {A} 1000.00 (ref fund-")
    assert out[1] == f"funded {B} 250.50 (ref r1): available 250.50, reserved 0.00"
    assert out[2].endswith("available 999.99, reserved 0.00")
    assert positions(url) == {A: Position(available=99_999), B: Position(available=25_050)}

    assert cli("ledger", "check", "--store", url) == 0
    assert capsys.readouterr().out.splitlines() == [
        "total available  1250.49",
        "total reserved   0.00",
        "funded           1250.50",
        "defunded         0.01",
        "conservation     holds: available + reserved == funded - defunded",
        "journal replay   matches the positions (3 entries)",
    ]
    assert cli("ledger", "check", "--store", url, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["conservation"] is True
    assert report["replay"] is True
    assert report["funded"] == "1250.50"
    assert report["journal_entries"] == 3


@pytest.mark.parametrize(
    ("who", "amount", "field"),
    [
        ("BNKZUS33XXX", "1.00", "PARTICIPANT"),
        (A, "1.001", "AMOUNT"),
        (A, "0", "AMOUNT"),
        (A, "-5.00", "AMOUNT"),
        (A, "ten", "AMOUNT"),
        (A, "NaN", "AMOUNT"),
    ],
)
def test_fund_bad_input(
    url: str, who: str, amount: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("participant", "fund", "--store", url, who, amount) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rtpswitch: error: {field}: ")
    assert err.count("\n") == 1
    assert positions(url)[A] == Position()


def test_defund_more_than_available_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("participant", "fund", "--store", url, A, "10.00") == 0
    assert cli("participant", "defund", "--store", url, A, "10.01") == 1
    assert "AMOUNT: available position" in capsys.readouterr().err
    assert positions(url)[A] == Position(available=1_000)


def test_ledger_check_finds_a_journal_that_does_not_match(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("participant", "fund", "--store", url, A, "10.00") == 0

    async def skew() -> None:
        # positions moved without a journal entry: conservation breaks, replay differs
        store = open_store(url)
        try:
            await store.commit_batch(Batch(deltas={B: PositionDelta(d_available=500)}))
        finally:
            await store.close()

    asyncio.run(skew())
    capsys.readouterr()
    assert cli("ledger", "check", "--store", url) == 1
    out = capsys.readouterr().out
    assert "conservation     BROKEN: available + reserved - (funded - defunded) = 5.00" in out
    assert "journal replay   DIFFERS from the positions (1 entries)" in out
    assert f"  {B}: stored 5.00 available, 0.00 reserved; journal 0.00 available" in out
    assert cli("ledger", "check", "--store", url, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["conservation"], report["replay"]) == (False, False)
    assert report["mismatches"][0]["participant"] == B


@pytest.mark.postgres
def test_on_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(reset_database(pg_url))
    assert cli("db", "migrate", "--store", pg_url) == 0
    assert cli("db", "migrate", "--store", pg_url) == 0
    applied = "".join(f"applied {v}\n" for v, _ in postgres.migrations())
    assert capsys.readouterr().out == applied + "up to date\n"
    add_participants(pg_url)
    assert cli("participant", "fund", "--store", pg_url, A, "75.25") == 0
    assert cli("participant", "defund", "--store", pg_url, A, "0.25") == 0
    assert positions(pg_url)[A] == Position(available=7_500)
    capsys.readouterr()
    assert cli("ledger", "check", "--store", pg_url, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["funded"], report["defunded"]) == ("75.25", "0.25")
    assert report["conservation"] and report["replay"]


def test_ledger_entries_are_fund_and_defund(url: str) -> None:
    assert cli("participant", "fund", "--store", url, A, "3.00", "--ref", "top-up") == 0
    assert cli("participant", "defund", "--store", url, A, "1.00", "--ref", "sweep") == 0

    async def journal() -> list[tuple[EntryKind, str, int]]:
        store = open_store(url)
        try:
            return [(e.kind, e.ref, e.amount) for e in await store.journal()]
        finally:
            await store.close()

    assert asyncio.run(journal()) == [
        (EntryKind.FUND, "top-up", 300),
        (EntryKind.DEFUND, "sweep", 100),
    ]
