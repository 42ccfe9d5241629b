"""Store administration: `db migrate`, `ledger check`, `participant fund|defund`.

Each sub-command opens the store named by `--store` (or `RTPSWITCH_STORE`), does one
thing and closes it. `ledger check` cross-checks the ledger two ways, both measured in
the database: conservation (sum of available and reserved positions against money
funded minus defunded) and a replay of the whole journal from nothing, which must give
back exactly the positions and funding totals stored. `participant fund|defund` move
central-bank money in or out of a participant's position: the ledger `Book`, restored
from the stored positions, produces the journal entries, and one batch commits them with
their net position change. The running engine keeps positions in memory, so funding and
defunding through this command is for a stopped switch.

Exit status: 0 done (or the ledger holds), 1 the operation was refused (or the ledger
does not hold), 2 bad input: an unusable `--store`, or a bad PARTICIPANT or AMOUNT; each
reported as one line naming the option or argument at fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

from switch.core import (
    InsufficientPosition,
    InternalError,
    ParticipantDirectory,
    format_minor,
    to_minor,
)
from switch.ledger import Book, Position, net_deltas, replay
from switch.store.base import Batch, Store, open_store
from switch.store.sqlite import SqliteStore

EXPONENT: Final = 2
"""Decimals of the scheme currency in AMOUNT and in reports."""

_PROG: Final = "rtpswitch"


class _Refused(Exception):
    """Bad input or a refused operation: one line for the operator, and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _fmt(minor: int) -> str:
    return format_minor(minor, EXPONENT)


def _store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the store itself is unusable (unreachable, not migrated)."""
    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is not None:
        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    return errors


def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]]) -> int:
    """Open `--store`, run `work` on it, close it; report failures as one line."""
    url = args.store or os.environ.get("RTPSWITCH_STORE")
    try:
        if not url:
            raise ValueError("--store: a store URL is required (or set RTPSWITCH_STORE)")
        store = open_store(url)
        if (
            isinstance(store, SqliteStore)
            and args.command_name not in ("migrate", "token-create")
            and store.path != ":memory:"
            and not Path(store.path).is_file()
        ):
            raise ValueError(f"--store: no database at {store.path} (run `rtpswitch db migrate`)")
    except ValueError as exc:
        return _error(str(exc), 2)

    async def main() -> int:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except _Refused as exc:
        return _error(str(exc), exc.status)
    except InternalError as exc:
        return _error(str(exc), 1)
    except Exception as exc:
        if not isinstance(exc, _store_errors()):
            raise
        return _error(f"--store: {type(exc).__name__}: {exc}".splitlines()[0], 2)


def _error(message: str, status: int) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return status


# --- db migrate ----------------------------------------------------------------------------


def run_migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations and print their versions."""

    async def work(store: Store) -> int:
        applied = await store.migrate()
        for version in applied:
            print(f"applied {version}")
        if not applied:
            print("up to date")
        return 0

    return _with_store(args, work)


# --- ledger check --------------------------------------------------------------------------


def run_ledger_check(args: argparse.Namespace) -> int:
    """Check conservation and that the journal replays to the stored positions."""

    async def work(store: Store) -> int:
        report = await store.conservation()
        state = await store.load_state()
        entries = await store.journal()
        mismatches: list[dict[str, str]] = []
        replay_error = None
        try:
            book = replay(entries)
        except InternalError as exc:
            replay_error = str(exc)
        else:
            replayed = book.snapshot().positions
            empty = Position()
            for p in sorted(state.positions.keys() | replayed.keys()):
                stored, journal = state.positions.get(p, empty), replayed.get(p, empty)
                if stored != journal:
                    mismatches.append(
                        {
                            "participant": p,
                            "stored": f"{_fmt(stored.available)} available, "
                            f"{_fmt(stored.reserved)} reserved",
                            "journal": f"{_fmt(journal.available)} available, "
                            f"{_fmt(journal.reserved)} reserved",
                        }
                    )
            for name, stored_total, journal_total in (
                ("funded", state.funded, book.funded),
                ("defunded", state.defunded, book.defunded),
            ):
                if stored_total != journal_total:
                    mismatches.append(
                        {
                            "total": name,
                            "stored": _fmt(stored_total),
                            "journal": _fmt(journal_total),
                        }
                    )
        replay_ok = replay_error is None and not mismatches
        if args.json:
            out = {
                "total_available": _fmt(report.total_available),
                "total_reserved": _fmt(report.total_reserved),
                "funded": _fmt(report.funded),
                "defunded": _fmt(report.defunded),
                "conservation": report.ok,
                "discrepancy": _fmt(report.discrepancy),
                "journal_entries": len(entries),
                "replay": replay_ok,
                "replay_error": replay_error,
                "mismatches": mismatches,
            }
            json.dump(out, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(f"total available  {_fmt(report.total_available)}")
            print(f"total reserved   {_fmt(report.total_reserved)}")
            print(f"funded           {_fmt(report.funded)}")
            print(f"defunded         {_fmt(report.defunded)}")
            if report.ok:
                print("conservation     holds: available + reserved == funded - defunded")
            else:
                print(
                    "conservation     BROKEN: available + reserved - (funded - defunded) = "
                    f"{_fmt(report.discrepancy)}"
                )
            if replay_ok:
                print(f"journal replay   matches the positions ({len(entries)} entries)")
            elif replay_error is not None:
                print(f"journal replay   FAILED: {replay_error}")
            else:
                print(f"journal replay   DIFFERS from the positions ({len(entries)} entries)")
                for m in mismatches:
                    what = m.get("participant") or m["total"]
                    print(f"  {what}: stored {m['stored']}; journal {m['journal']}")
        return 0 if report.ok and replay_ok else 1

    return _with_store(args, work)


# --- participant fund | defund -------------------------------------------------------------


def parse_amount(text: str) -> int:
    """AMOUNT in minor units; ValueError naming AMOUNT unless a positive 2-decimal amount."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"AMOUNT: not a decimal amount: {text!r}") from None
    try:
        minor = to_minor(amount, EXPONENT)
    except ValueError as exc:
        raise ValueError(f"AMOUNT: {exc}") from None
    if minor <= 0:
        raise ValueError(f"AMOUNT: must be positive, not {text}")
    return minor


def _move(args: argparse.Namespace, action: str) -> int:
    try:
        minor = parse_amount(args.amount)
    except ValueError as exc:
        return _error(str(exc), 2)
    ref = args.ref or f"{action}-{uuid4()}"

    async def work(store: Store) -> int:
        state = await store.load_state()
        directory = ParticipantDirectory(state.participants.values())
        who = args.participant
        participant = directory.by_bicfi(who) or directory.by_member_id(who)
        if participant is None:
            raise _Refused(f"PARTICIPANT: unknown participant {who!r}", 2)
        pid = participant.id
        book = Book.from_positions(state.positions, funded=state.funded, defunded=state.defunded)
        try:
            entries = (
                book.fund(pid, minor, ref) if action == "fund" else book.defund(pid, minor, ref)
            )
        except InsufficientPosition as exc:
            raise _Refused(f"AMOUNT: {exc}", 1) from None
        await store.commit_batch(Batch(journal=entries, deltas=net_deltas(entries)))
        pos = book.position(pid)
        print(
            f"{action}ed {pid} {_fmt(minor)} (ref {ref}): "
            f"available {_fmt(pos.available)}, reserved {_fmt(pos.reserved)}"
        )
        return 0

    return _with_store(args, work)


def run_fund(args: argparse.Namespace) -> int:
    """Bring central-bank money into a participant's available position."""
    return _move(args, "fund")


def run_defund(args: argparse.Namespace) -> int:
    """Take money out of a participant's available position."""
    return _move(args, "defund")


# --- the parser ----------------------------------------------------------------------------


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        help="store URL: postgresql://... or sqlite:///path.db (default: $RTPSWITCH_STORE)",
    )


# --- operator tokens -----------------------------------------------------------------------


def run_token_create(args: argparse.Namespace) -> int:
    """Issue an operator token and print it (the only time it is shown)."""
    from switch.operations import Role
    from switch.operator_service import create_token

    if not _OPERATOR_NAME.fullmatch(args.name):
        return _error(
            f"--name: {args.name!r} is not an operator name (letters, digits, . _ @ - and "
            "spaces, up to 64)",
            2,
        )

    async def work(store: Store) -> int:
        await store.migrate()
        token, text = await create_token(store, args.name, Role(args.role), None, datetime.now(UTC))
        if args.json:
            print(
                json.dumps({"id": token.id, "name": token.name, "role": token.role, "token": text})
            )
        else:
            print(text)
            print(
                f"operator token {token.id} for {token.name} ({token.role}); keep it secret: "
                "it is not shown again",
                file=sys.stderr,
            )
        return 0

    return _with_store(args, work)


def run_token_list(args: argparse.Namespace) -> int:
    """List operator tokens (never their secrets)."""

    async def work(store: Store) -> int:
        tokens = await store.tokens()
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "role": str(t.role),
                "created_at": t.created_at.isoformat(),
                "created_by": t.created_by,
                "revoked_at": None if t.revoked_at is None else t.revoked_at.isoformat(),
            }
            for t in tokens
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
                print(f"{r['id']}  {r['role']:<8}  {r['name']:<20}  {state}")
        return 0

    return _with_store(args, work)


def run_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an operator token (the next request with it is refused)."""
    from switch.operator_service import audit_record, token_view

    async def work(store: Store) -> int:
        found = await store.token_get(args.token_id)
        if found is None:
            raise _Refused(f"TOKEN_ID: there is no operator token {args.token_id}", 1)
        now = datetime.now(UTC)
        before = token_view(found[0])
        audit = audit_record(
            None,
            "token.revoke",
            args.token_id,
            before,
            before | {"revoked_at": now.isoformat()},
            now,
        )
        await store.token_revoke(args.token_id, at=now, by="command-line", audit=audit)
        print(f"operator token {args.token_id} revoked")
        return 0

    return _with_store(args, work)


_OPERATOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")


def register(sub: Any) -> None:
    """Add the `db`, `ledger`, `participant` and `operator` sub-commands."""
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("migrate", help="apply pending schema migrations")
    _store_option(p)
    p.set_defaults(run=run_migrate, command_name="migrate")

    ledger = sub.add_parser("ledger", help="settlement ledger checks")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    p = ledger_sub.add_parser(
        "check", help="check conservation and replay the journal against the positions"
    )
    _store_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run_ledger_check, command_name="check")

    participant = sub.add_parser("participant", help="participant operations")
    participant_sub = participant.add_subparsers(
        dest="participant_command", required=True, metavar="ACTION"
    )
    for name, run, text in (
        ("fund", run_fund, "bring money into a participant's position"),
        ("defund", run_defund, "take money out of a participant's position"),
    ):
        p = participant_sub.add_parser(name, help=f"{text} (on a stopped switch)")
        _store_option(p)
        p.add_argument("participant", metavar="PARTICIPANT", help="BICFI or member id")
        p.add_argument("amount", metavar="AMOUNT", help="decimal amount, e.g. 1000.00")
        p.add_argument("--ref", help="journal reference (default: generated)")
        p.set_defaults(run=run, command_name=name)

    operator = sub.add_parser("operator", help="operator API access (tokens)")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True, metavar="WHAT")
    token = operator_sub.add_parser("token", help="operator tokens of the operator API")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = token_sub.add_parser("create", help="issue a token and print it (shown only once)")
    _store_option(p)
    p.add_argument("--name", required=True, help="the operator's name, as the audit log shows it")
    p.add_argument(
        "--role", required=True, choices=["viewer", "operator", "admin"], help="what it may do"
    )
    p.add_argument("--json", action="store_true", help="print id, name, role and token as JSON")
    p.set_defaults(run=run_token_create, command_name="token-create")
    p = token_sub.add_parser("list", help="list tokens (never their secrets)")
    _store_option(p)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(run=run_token_list, command_name="token-list")
    p = token_sub.add_parser("revoke", help="revoke a token")
    _store_option(p)
    p.add_argument("token_id", metavar="TOKEN_ID", help="the token's id (12 hex digits)")
    p.set_defaults(run=run_token_revoke, command_name="token-revoke")
