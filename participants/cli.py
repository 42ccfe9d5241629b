"""`rtpswitch participant-send|participant-receive`: a bank engineer's view of the connector.

`participant-send --bank ID FILE.xml ...` signs each message file with the bank's signing
key and sends it to the switch over the bank's mutual-TLS channel; every file is read
and signed before the first is sent, so a bad file sends nothing. `participant-receive
--bank ID` takes messages from the bank's queue, verifies that the switch signed each,
and prints them (or writes them to `--out DIR`); a message that fails verification is
reported on stderr with its reason code and is not counted. Credentials, trust store and
broker come from the `[service]` table of `--config` (`pki_dir`, `amqp_host`, ...).

Exit status: 0 done (every file sent; `--count` messages received), 1 the broker could
not be reached or refused, or fewer messages came than `--count` before the timeout,
2 bad input (configuration, bank id, credentials, a file that is not a signable message).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported when a command runs: `rtpswitch` starts fast
    from participants.connector import BankConnector, RejectedMessage
    from switch.settings import Settings

__all__ = ["register", "run_receive", "run_send"]

_PROG: Final = "rtpswitch"
_DEFAULT_TIMEOUT: Final = 5.0
_HEADER_FIELD: Final = {
    name: re.compile(rb"<(?:[\w.-]+:)?" + name.encode() + rb">([^<]{1,64})</")
    for name in ("BizMsgIdr", "MsgDefIdr")
}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


class _Refused(Exception):
    """One line for the engineer, and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error(command: str, message: str) -> None:
    print(f"{_PROG} {command}: {message}", file=sys.stderr)


def _header(data: bytes, name: str) -> str | None:
    """A header field of a message, for naming it in output (not for deciding anything)."""
    m = _HEADER_FIELD[name].search(data)
    return m.group(1).decode(errors="replace").strip() if m else None


def _settings(args: argparse.Namespace) -> Settings:
    from switch.settings import SettingsError, load_settings

    try:
        return load_settings(args.config)
    except SettingsError as exc:
        raise _Refused(f"--config: {exc}", 2) from None


async def _connect(settings: Settings, bank: str) -> BankConnector:
    from participants.connector import connect
    from switch.security.pki import PkiError
    from switch.transport.amqp import AmqpTransportError

    try:
        return await connect(settings, bank)
    except (PkiError, ValueError) as exc:
        raise _Refused(f"--bank {bank}: {exc}", 2) from None
    except (AmqpTransportError, OSError) as exc:
        raise _Refused(str(exc), 1) from None


def _run(command: str, work: Coroutine[Any, Any, int]) -> int:
    from switch.transport.amqp import AmqpTransportError

    try:
        status: int = asyncio.run(work)
    except _Refused as exc:
        _error(command, str(exc))
        return exc.status
    except AmqpTransportError as exc:
        _error(command, str(exc))
        return 1
    return status


# --- participant-send ------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    """Sign each message file with the bank's key and send it to the switch."""
    return _run("participant-send", _send(args))


async def _send(args: argparse.Namespace) -> int:
    from switch.iso20022.parse import UnusableMessage

    settings = _settings(args)
    files: Sequence[Path] = args.files
    raw: list[bytes] = []
    for path in files:
        try:
            raw.append(path.read_bytes())
        except OSError as exc:
            raise _Refused(f"{path}: {exc.strerror or exc}", 2) from None
    connector = await _connect(settings, args.bank)
    try:
        for path, data in zip(files, raw, strict=True):
            try:
                connector.sign(data)  # every file is signable before the first is sent
            except (UnusableMessage, ValueError) as exc:
                raise _Refused(f"{path}: cannot be signed: {exc}", 2) from None
        serial = f"0x{connector.signer.certificate.serial_number:x}"
        for path, message in zip(files, raw, strict=True):
            data = await connector.submit(message)
            print(
                f"sent {path}: {_header(data, 'MsgDefIdr') or '?'} "
                f"BizMsgIdr {_header(data, 'BizMsgIdr') or '?'}, {len(data)} bytes, "
                f"signed by {connector.participant} (certificate {serial})",
                flush=True,
            )
    finally:
        await connector.close()
    return 0


# --- participant-receive ---------------------------------------------------------------------


def run_receive(args: argparse.Namespace) -> int:
    """Receive messages from the switch, verify them, and print or write them."""
    if args.count < 0:
        _error("participant-receive", "--count must be 0 (until the timeout) or more")
        return 2
    if args.timeout <= 0:
        _error("participant-receive", "--timeout must be positive")
        return 2
    return _run("participant-receive", _receive(args))


def _file_name(n: int, data: bytes, suffix: str = "") -> str:
    parts = [f"{n:04d}", _header(data, "MsgDefIdr") or "message"]
    biz = _header(data, "BizMsgIdr")
    if biz:
        parts.append(biz)
    return _UNSAFE.sub("_", "-".join(parts) + suffix) + ".xml"


async def _receive(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out: Path | None = args.out
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Refused(f"--out {out}: {exc.strerror or exc}", 2) from None
    connector = await _connect(settings, args.bank)
    reported = 0
    received = 0
    try:
        while args.count == 0 or received < args.count:
            data = await connector.receive(args.timeout)
            total = connector.counters["rejected"]
            fresh = list(connector.rejected)[-(total - reported) :] if total > reported else []
            for rejected in fresh:
                reported += 1
                _report_rejected(rejected, reported, out)
            reported = total
            if data is None:
                break
            received += 1
            if out is None:
                sys.stdout.buffer.write(data + b"\n")
                sys.stdout.flush()
            else:
                path = out / _file_name(received, data)
                path.write_bytes(data)
                print(path, flush=True)
    finally:
        await connector.close()
    rejected_total = connector.counters["rejected"]
    print(
        f"{_PROG} participant-receive: {received} received and verified, {rejected_total} refused",
        file=sys.stderr,
    )
    if args.count and received < args.count:
        return 1
    return 0


def _report_rejected(rejected: RejectedMessage, n: int, out: Path | None) -> None:
    where = ""
    if out is not None:
        path = out / _file_name(n, rejected.data, f"-refused-{rejected.code}")
        path.write_bytes(rejected.data)
        where = f" (kept as {path})"
    print(
        f"{_PROG} participant-receive: refused a message: {rejected.code} {rejected.reason}{where}",
        file=sys.stderr,
        flush=True,
    )


def register(sub: Any) -> None:
    """Add the `participant-send` and `participant-receive` sub-commands."""
    send = sub.add_parser(
        "participant-send",
        help="sign message files as a bank and send them to the switch",
        description="Sign each FILE (a BizMsg: AppHdr and Document, without Sgntr) with "
        "the bank's signing key and send it to the switch over the bank's mutual-TLS "
        "channel.",
    )
    send.add_argument("--config", type=Path, help="switch configuration (TOML)")
    send.add_argument("--bank", required=True, metavar="ID", help="the sending participant")
    send.add_argument("files", nargs="+", type=Path, metavar="FILE.xml")
    send.set_defaults(run=run_send)

    receive = sub.add_parser(
        "participant-receive",
        help="receive messages from the switch as a bank, verifying each signature",
        description="Take messages from the bank's queue; print (or write) those the switch "
        "signed, report the others on stderr with their reason code.",
    )
    receive.add_argument("--config", type=Path, help="switch configuration (TOML)")
    receive.add_argument("--bank", required=True, metavar="ID", help="the receiving participant")
    receive.add_argument(
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="stop after N verified messages (default 1; 0: until --timeout passes idle)",
    )
    receive.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds without a message (default {_DEFAULT_TIMEOUT:g})",
    )
    receive.add_argument(
        "--out", type=Path, metavar="DIR", help="write each message to a file in DIR"
    )
    receive.set_defaults(run=run_receive)
