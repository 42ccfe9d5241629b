"""The scheme PKI: `pki init|issue|rotate|revoke|list|server|crl`.

`init` creates the scheme CA (or keeps the one already there); `issue` gives a participant
(or the switch, under its own id) a TLS client certificate and a message-signing key;
`rotate` does the same and retires the older ones after an overlap; `revoke` revokes one
certificate or all of a participant's and re-signs the CRL; `list` shows what was
issued and its status now; `server` issues the TLS server certificate of the broker
listener and the operator API; `crl` re-signs the CRL (run it more often than every 30
days, and after an overlap ends so the broker sees the retirement).

The PKI directory is `--dir`, else `RTPSWITCH_PKI`, else `var/pki`.

Exit status: 0 done, 2 bad input (a bad participant id, key type, reason or serial, an
unknown participant, no CA in the directory), reported as one line naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from switch.security.pki import (
    KEY_TYPES,
    REASONS,
    CertRecord,
    IssuedCredentials,
    PkiError,
    SchemeCA,
)

DEFAULT_DIR: Final = Path("var/pki")
_PROG: Final = "rtpswitch pki"


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    env = os.environ.get("RTPSWITCH_PKI")
    return Path(env) if env else DEFAULT_DIR


def _guarded(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run `work`, turning a refused PKI operation into one line on stderr and exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except PkiError as exc:
            return _error(f"{args.pki_command}: {exc}")
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return _error(f"{args.pki_command}: {where}{exc.strerror or exc}")

    return run


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


def _serial(text: str) -> int:
    """A serial in decimal (as written in file names) or 0x-hexadecimal."""
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"serial {text!r} is not a number") from None


# --- the actions ---------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    """Create the scheme CA, or report the one already there."""
    directory = _directory(args)
    existed = (directory / "ca" / "ca.key").exists()
    ca = SchemeCA.init(directory, name=args.name, days=args.days)
    subject = ca.certificate.subject.rfc4514_string()
    if existed:
        print(f"scheme CA already in {directory}, kept: {subject}")
    else:
        print(f"created scheme CA {subject}")
        print(f"  key         {ca.ca_key_path}")
    print(f"  certificate {ca.ca_cert_path}")
    print(f"  crl         {ca.crl_path}")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    """Issue a participant's TLS client certificate and signing key."""
    ca = SchemeCA.load(_directory(args))
    creds = ca.issue(args.participant, key_type=args.key_type, days=args.days)
    _print_credentials("issued", creds.participant, creds)
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    """Issue new credentials and retire the older ones after the overlap."""
    ca = SchemeCA.load(_directory(args))
    creds = ca.rotate(
        args.participant, key_type=args.key_type, days=args.days, overlap_days=args.overlap_days
    )
    _print_credentials("rotated", creds.participant, creds)
    retiring = [
        r
        for r in ca.certificates(creds.participant)
        if r.retire_at is not None and r.revoked_at is None
    ]
    for r in retiring:
        print(f"  retires     {r.kind} {r.serial} at {r.retire_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke one certificate or all of a participant's, and re-sign the CRL."""
    ca = SchemeCA.load(_directory(args))
    revoked = ca.revoke(args.participant, args.serial, reason=args.reason)
    for serial in revoked:
        print(f"revoked {serial}")
    if not revoked:
        print("nothing to revoke: already revoked")
    print(f"crl {ca.crl_path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Show the certificates issued and their status now."""
    ca = SchemeCA.load(_directory(args))
    records = ca.certificates(args.participant)
    if args.participant is not None and not records:
        raise PkiError(f"participant {args.participant} has no certificates from this CA")
    now = datetime.now(UTC)
    if args.json:
        rows = [_row(r, now) for r in records]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ("SERIAL", "PARTICIPANT", "KIND", "KEY", "NOT AFTER", "STATUS", "NOTE")
    table = [header] + [
        (
            str(r.serial),
            r.participant or "-",
            r.kind,
            r.key_type,
            f"{r.not_after:%Y-%m-%d}",
            r.status(now).value,
            _note(r),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_server(args: argparse.Namespace) -> int:
    """Issue the TLS server certificate for the broker listener and the operator API."""
    ca = SchemeCA.load(_directory(args))
    cert, key = ca.issue_server(args.hostnames, days=args.days, key_type=args.key_type)
    print(f"issued server certificate for {', '.join(args.hostnames)}")
    print(f"  certificate {cert}")
    print(f"  key         {key}")
    print(f"  ca          {ca.ca_cert_path}")
    return 0


def run_crl(args: argparse.Namespace) -> int:
    """Re-sign the CRL."""
    ca = SchemeCA.load(_directory(args))
    print(f"crl {ca.refresh_crl()}")
    return 0


def _print_credentials(verb: str, participant: str, creds: IssuedCredentials) -> None:
    print(f"{verb} credentials for {participant} ({creds.key_type})")
    print(f"  tls         {creds.tls_cert} (serial {creds.tls_serial})")
    print(f"  tls key     {creds.tls_key}")
    print(f"  signing     {creds.signing_cert} (serial {creds.signing_serial})")
    print(f"  signing key {creds.signing_key}")
    print(f"  ca          {creds.ca_cert}")


def _note(r: CertRecord) -> str:
    if r.revoked_at is not None:
        return f"revoked {r.revoked_at:%Y-%m-%dT%H:%M:%SZ} ({r.reason})"
    if r.retire_at is not None:
        return f"retires {r.retire_at:%Y-%m-%dT%H:%M:%SZ}"
    return ""


def _row(r: CertRecord, now: datetime) -> dict[str, Any]:
    return {
        "serial": str(r.serial),
        "participant": r.participant,
        "kind": r.kind,
        "key_type": r.key_type,
        "subject": r.subject,
        "not_before": r.not_before.isoformat(),
        "not_after": r.not_after.isoformat(),
        "retire_at": None if r.retire_at is None else r.retire_at.isoformat(),
        "revoked_at": None if r.revoked_at is None else r.revoked_at.isoformat(),
        "reason": r.reason,
        "status": r.status(now).value,
        "path": str(r.path),
    }


# --- wiring --------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the `pki` sub-command."""
    pki = sub.add_parser("pki", help="scheme CA: participant certificates and revocation")
    actions = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    def action(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("--dir", help=f"PKI directory (default: $RTPSWITCH_PKI, else {DEFAULT_DIR})")
        p.set_defaults(run=_guarded(run))
        return p

    key_types = "|".join(KEY_TYPES)
    p = action("init", run_init, "create the scheme CA (keeps an existing one)")
    p.add_argument("--name", default="RTP Switch Scheme CA", help="CA common name")
    p.add_argument("--days", type=int, default=3650, help="CA validity (default 3650)")

    for name, run, text in (
        ("issue", run_issue, "issue a participant's TLS client certificate and signing key"),
        ("rotate", run_rotate, "issue new credentials and retire the older ones after an overlap"),
    ):
        p = action(name, run, text)
        p.add_argument("participant", metavar="PARTICIPANT", help="BICFI or member id")
        p.add_argument(
            "--key-type", default="ec", metavar=key_types, help="ec (P-256, default) or rsa (2048)"
        )
        p.add_argument("--days", type=int, default=365, help="validity (default 365)")
    p.add_argument(
        "--overlap-days",
        type=int,
        default=7,
        help="days the older credentials stay valid (default 7)",
    )

    p = action("revoke", run_revoke, "revoke a participant's certificates and re-sign the CRL")
    p.add_argument("participant", metavar="PARTICIPANT", help="BICFI or member id")
    p.add_argument("--serial", type=_serial, help="only this certificate (default: all)")
    p.add_argument(
        "--reason",
        default="unspecified",
        metavar="REASON",
        help=f"one of {', '.join(REASONS)} (default unspecified)",
    )

    p = action("list", run_list, "list issued certificates and their status now")
    p.add_argument("participant", metavar="PARTICIPANT", nargs="?", help="only this one")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = action("server", run_server, "issue the TLS server certificate (broker, operator API)")
    p.add_argument("hostnames", metavar="HOSTNAME", nargs="+", help="DNS name or IP address")
    p.add_argument("--days", type=int, default=825, help="validity (default 825)")
    p.add_argument("--key-type", default="ec", metavar=key_types, help="ec (default) or rsa")

    action("crl", run_crl, "re-sign the CRL, adding retirements now due")
