"""`rtpswitch simulate-batch`: a simulated bank drops one batch file on the SFTP drop.

It writes a pacs.008 file of `--payments` credit transfers from `--bank` (round robin
over `--to`, default every other bank of the participants file), signs it with the
bank's signing key from the scheme PKI (`--pki`, default `service.pki_dir`; `--unsigned`
for an embedded switch, which checks no signatures), uploads it to the drop with the
bank's SSH key (temporary name, then rename), waits for the answer in `/outbox`,
verifies the switch's signature over it (when signed) and prints a JSON report: the
group status and the transactions per status and reason, with timings.

Exit status: 0 the file was answered (whatever the answer), 1 no answer in time or the
drop could not be reached, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from switch.settings import SettingsError, load_demo_participants, load_settings

_PROG = "rtpswitch simulate-batch"


def run(args: argparse.Namespace) -> int:
    """Drop one batch file and report its answer."""
    import paramiko

    from simulators.batch import drop_batch
    from switch.iso20022.views import Agent
    from switch.security.pki import PkiError, TrustStore, load_credentials
    from switch.security.xmldsig import Signer, Verifier

    try:
        settings = load_settings(args.config)
        participants = load_demo_participants(
            settings.service.participants, exponent=settings.scheme.exponent
        )
        ids = [dp.participant.id for dp in participants]
        bank = args.bank.strip().upper()
        if bank not in ids:
            raise SettingsError(f"--bank {args.bank}: not a participant of the participants file")
        to = [t.strip().upper() for t in args.to] or [p for p in ids if p != bank]
        creditors = [Agent(bicfi=t) for t in to]
        try:
            amount = Decimal(args.amount)
        except InvalidOperation:
            raise SettingsError(f"--amount {args.amount}: not a decimal amount") from None
        if not amount.is_finite() or amount <= 0:
            raise SettingsError(f"--amount {args.amount}: must be a positive amount")
        if args.payments < 1:
            raise SettingsError(f"--payments {args.payments}: at least 1")
        port = args.sftp_port if args.sftp_port is not None else settings.batch.port
        if not port:
            raise SettingsError("no SFTP port: pass --sftp-port or set [batch] port")
        if not args.ssh_key.is_file():
            raise SettingsError(f"--ssh-key {args.ssh_key}: no such file")
        key = paramiko.PKey.from_path(args.ssh_key)
        signer = verifier = None
        if not args.unsigned:
            pki = args.pki or settings.service.pki_dir
            creds = load_credentials(pki, bank)
            signer = Signer.from_files(creds.signing_key, creds.signing_cert)
            verifier = Verifier(TrustStore.load(pki))
    except (SettingsError, PkiError, ValueError, paramiko.SSHException) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rtpswitch-batch-") as work:
        try:
            report = drop_batch(
                host=args.sftp_host or settings.batch.host,
                port=port,
                bank=bank,
                ssh_key=key,
                switch_id=settings.scheme.switch_bicfi,
                count=args.payments,
                creditors=creditors,
                amount=amount,
                workdir=Path(work),
                signer=signer,
                verifier=verifier,
                account=args.account,
                timeout=args.timeout,
            )
        except (OSError, TimeoutError, paramiko.SSHException) as exc:
            print(f"{_PROG}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(report.as_json(), indent=2))
    return 0


def register(sub: Any) -> None:
    """Add the `simulate-batch` sub-command."""
    p = sub.add_parser(
        "simulate-batch",
        help="drop one batch file of a simulated bank on the SFTP drop and report the answer",
    )
    p.add_argument("--config", type=Path, help="switch configuration (TOML)")
    p.add_argument("--bank", required=True, metavar="ID", help="the debtor agent's participant id")
    p.add_argument("--payments", type=int, default=100, metavar="N", help="transactions in it")
    p.add_argument(
        "--to", action="append", default=[], metavar="BANK", help="creditor agent (repeat)"
    )
    p.add_argument("--amount", default="1.00", help="amount of each payment (default 1.00)")
    p.add_argument("--account", default="000000000002", help="creditor account of each payment")
    p.add_argument("--sftp-host", help="the drop's host (default batch.host)")
    p.add_argument("--sftp-port", type=int, help="the drop's port (default batch.port)")
    p.add_argument("--ssh-key", type=Path, required=True, help="the bank's SSH private key")
    p.add_argument("--pki", type=Path, help="scheme PKI directory (default service.pki_dir)")
    p.add_argument("--unsigned", action="store_true", help="do not sign (embedded switch)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    p.set_defaults(run=run)
