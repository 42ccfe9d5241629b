"""The alias directory for the operator: `directory import FILE` and `directory list`.

`import` is bulk onboarding (RULEBOOK §5): a CSV file with the header
`participant,type,value,account,name` (or a JSON array of objects with those keys; the
value is empty or absent for an EVP, which the directory generates) registers every row
that is right and reports every row: its number, then `ok` and the alias, or the code,
the field at fault and what is wrong. A row naming a participant the store does not know
is refused (`invalid_participant`) like a malformed one. Rows are decided together, in
one write of the directory, so two rows of one file cannot register the same alias.
`list` shows the registered aliases (active and inactive), all or one participant's,
with their accounts: it is for the operator, not for another bank.

Exit status: 0 every row imported (or listed), 1 some row refused, 2 bad input: an
unreadable or malformed FILE, an unusable `--store`, an unknown `--participant`; each
reported as one line naming the argument at fault.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal
from uuid import uuid4

from switch.cli.admin import _error, _Refused, _store_option, _with_store
from switch.directory import Alias, AliasStatus, DirectoryError, parse_import
from switch.directory_service import DirectoryService
from switch.store.base import Store

MAX_ACTOR: Final = 100
"""Longest operator name given with `--actor`."""


def _service(store: Store) -> DirectoryService:
    """The directory as the operator changes it (claims are the participants' business)."""
    return DirectoryService(
        store,
        clock=lambda: datetime.now(UTC),
        claim_period=timedelta(days=7),
        claim_ids=lambda: uuid4().hex,
    )


def _format(args: argparse.Namespace) -> Literal["csv", "json"]:
    if args.format is not None:
        return "json" if args.format == "json" else "csv"
    return "json" if Path(args.file).suffix.lower() == ".json" else "csv"


def _actor(args: argparse.Namespace) -> str:
    """`operator:<name>`, the name from `--actor` or the user running the command."""
    if args.actor is not None:
        name = args.actor
        if not 1 <= len(name) <= MAX_ACTOR or not name.isprintable() or name.strip() != name:
            raise ValueError(
                f"--actor: 1 to {MAX_ACTOR} printable characters, no surrounding blanks"
            )
        return f"operator:{name}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return "operator"
    ok = 1 <= len(user) <= MAX_ACTOR and user.isprintable() and user.strip() == user
    return f"operator:{user}" if ok else "operator"


# --- directory import ----------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    """Register every right row of FILE; report each row; exit 1 if any was refused."""
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        return _error(f"FILE: {args.file}: {exc.strerror or exc}", 2)
    try:
        rows = parse_import(data, _format(args))
    except DirectoryError as exc:
        where = f" ({exc.field})" if exc.field else ""
        return _error(f"FILE: {args.file}{where}: {exc.message}", 2)
    try:
        actor = _actor(args)
    except ValueError as exc:
        return _error(str(exc), 2)

    async def work(store: Store) -> int:
        known = (await store.load_state()).participants
        strangers: dict[int, str] = {}
        checked: list[Mapping[str, str]] = []
        for number, row in enumerate(rows, start=1):
            participant = row.get("participant", "").strip().upper()
            if participant and participant not in known:
                # Refused by the directory as malformed, so the row stores nothing and
                # every row keeps its number in the directory's own messages.
                strangers[number] = f"{participant} is not a participant of the scheme"
                checked.append({**row, "participant": ""})
            else:
                checked.append({**row, "participant": participant})
        service = _service(store)
        await service.start()
        outcomes: dict[int, dict[str, Any]] = {}
        if checked:
            report = await service.import_rows(checked, actor=actor)
            for outcome in report.rows:
                number = outcome.row
                if number in strangers:
                    outcomes[number] = _refused(
                        number, "invalid_participant", "participant", strangers[number]
                    )
                elif outcome.change is not None:
                    alias = outcome.change.alias
                    outcomes[number] = {
                        "row": number,
                        "ok": True,
                        "type": str(alias.kind),
                        "value": alias.value,
                        "participant": alias.participant,
                    }
                else:
                    outcomes[number] = _refused(
                        number, outcome.code or "", outcome.field, outcome.message or ""
                    )
        report_rows = [outcomes[n] for n in sorted(outcomes)]
        refused = sum(1 for r in report_rows if not r["ok"])
        if args.json:
            json.dump({"rows": report_rows, "refused": refused}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            for r in report_rows:
                if r["ok"]:
                    print(f"row {r['row']}: ok {r['type']} {r['value']} -> {r['participant']}")
                else:
                    field = f" ({r['field']})" if r["field"] else ""
                    print(f"row {r['row']}: {r['code']}{field}: {r['message']}")
            print(
                f"{len(report_rows)} rows: {len(report_rows) - refused} imported, {refused} refused"
            )
        return 1 if refused else 0

    return _with_store(args, work)


def _refused(number: int, code: str, field: str | None, message: str) -> dict[str, Any]:
    return {"row": number, "ok": False, "code": code, "field": field, "message": message}


# --- directory list ------------------------------------------------------------------------


def _alias_json(alias: Alias) -> dict[str, Any]:
    return {
        "type": str(alias.kind),
        "value": alias.value,
        "participant": alias.participant,
        "account": alias.account,
        "name": alias.name,
        "status": str(alias.status),
        "updated_at": alias.updated_at.isoformat(),
    }


def run_list(args: argparse.Namespace) -> int:
    """Print the registered aliases, all or one participant's."""

    async def work(store: Store) -> int:
        service = _service(store)
        await service.start()
        if args.participant is not None:
            participant = args.participant.strip().upper()
            if participant not in (await store.load_state()).participants:
                raise _Refused(f"--participant: unknown participant {args.participant!r}", 2)
            aliases = service.directory.owned_by(participant)
        else:
            aliases = sorted(
                (
                    a
                    for a in service.directory.iter_aliases()
                    if a.status is not AliasStatus.DELETED
                ),
                key=lambda a: (a.participant, a.kind, a.value),
            )
        if args.json:
            json.dump([_alias_json(a) for a in aliases], sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        for a in aliases:
            print(f"{a.participant}  {a.kind:<4}  {a.value}  {a.account}  {a.status}  {a.name}")
        print(f"{len(aliases)} aliases")
        return 0

    return _with_store(args, work)


# --- the parser ----------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the `directory` sub-commands."""
    directory = sub.add_parser("directory", help="the alias directory (bulk import, listing)")
    directory_sub = directory.add_subparsers(
        dest="directory_command", required=True, metavar="ACTION"
    )
    p = directory_sub.add_parser(
        "import", help="register aliases in bulk from a CSV or JSON file, reporting each row"
    )
    p.add_argument("file", metavar="FILE", help="participant,type,value,account,name rows")
    _store_option(p)
    p.add_argument(
        "--format",
        choices=("csv", "json"),
        help="the file's format (default: json for a .json file, else csv)",
    )
    p.add_argument("--actor", help="the operator's name in the history (default: the user)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run_import, command_name="import")

    p = directory_sub.add_parser("list", help="list the registered aliases")
    _store_option(p)
    p.add_argument("--participant", metavar="ID", help="only this participant's aliases")
    p.add_argument("--json", action="store_true", help="print the aliases as JSON")
    p.set_defaults(run=run_list, command_name="list")
