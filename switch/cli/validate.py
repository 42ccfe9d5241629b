"""`rtpswitch validate`: check files against the scheme's ISO 20022 schemas.

For each file it prints the message type and either `valid` or every schema error with
its line and element path. Input that is not a scheme message at all (empty, not XML, a
DTD or entity, an unknown namespace) gets one clear line. Exit status 0 only when every
file is valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switch.iso20022 import SchemaIssue, UnusableMessage, parse, validate


@dataclass(slots=True)
class Verdict:
    """What validation found in one file."""

    file: str
    type: str | None = None
    valid: bool = False
    error: str | None = None
    errors: list[SchemaIssue] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict."""
        return {
            "file": self.file,
            "type": self.type,
            "valid": self.valid,
            "error": self.error,
            "errors": [
                {"part": e.part, "line": e.line, "path": e.path, "message": e.message}
                for e in self.errors
            ],
        }


def check_file(path: Path) -> Verdict:
    """Read, parse and validate one file."""
    verdict = Verdict(file=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        verdict.error = f"cannot read file: {exc.strerror or exc}"
        return verdict
    try:
        msg = parse(data)
    except UnusableMessage as exc:
        verdict.error = str(exc)
        return verdict
    verdict.type = msg.mtype.value
    verdict.errors = validate(msg)
    verdict.valid = not verdict.errors
    return verdict


def run(args: argparse.Namespace) -> int:
    """Validate every file named on the command line."""
    verdicts = [check_file(Path(f)) for f in args.files]
    if args.json:
        json.dump([v.as_json() for v in verdicts], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for v in verdicts:
            if v.error is not None:
                print(f"{v.file}: error: {v.error}")
            elif v.valid:
                print(f"{v.file}: {v.type}: valid")
            else:
                print(f"{v.file}: {v.type}: invalid ({len(v.errors)} errors)")
                for e in v.errors:
                    print(f"  {e}")
    return 0 if all(v.valid for v in verdicts) else 1


def register(sub: Any) -> None:
    """Add the `validate` sub-command."""
    p = sub.add_parser("validate", help="validate ISO 20022 messages against the scheme schemas")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=run)
