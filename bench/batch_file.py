"""Batch file benchmark: one large pacs.008 file cleared end to end through the SFTP drop.

    python -m bench.batch_file --transactions 100000 [--store URL] [--json]

It starts `rtpswitch sftp-bridge --embedded` as a process of its own (the switch: engine,
store, SFTP drop, and the participants file's simulated banks answering as creditor
agents, in that one process), writes a file of `--transactions` credit transfers from
bank A to banks B and C, and has bank A upload it over SFTP (`participants.sftp`). It
reports the seconds from the completed upload (the rename) to the status file in
`/outbox`, transactions per second, the switch process's peak resident memory (VmHWM,
which includes the in-process simulated banks), and the statuses the file came back
with. Each run uses fresh trees and, on SQLite, a fresh database; give `--store` a
PostgreSQL database of its own (it is migrated, and its scheme funded, if new).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[1]
A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _archived_bytes(archive: Path) -> int:
    return sum(f.stat().st_size for f in archive.glob("F*"))


def run(
    transactions: int, store: str | None, work: Path, config: Path | None = None
) -> dict[str, Any]:
    from simulators.batch import drop_batch
    from switch.iso20022.views import Agent

    private = ed25519.Ed25519PrivateKey.generate()
    key_file = work / "bank_a_ssh"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keys = work / "var" / "sftp" / "keys"
    keys.mkdir(parents=True)
    (keys / f"{A}.pub").write_bytes(public + b"\n")
    port = _free_port()
    command = [sys.executable, "-m", "switch.cli", "sftp-bridge", "--embedded"]
    command += ["--port", str(port), "--root", str(work / "sftp")]
    if store:
        command += ["--store", store]
    if config:
        command += ["--config", str(config.absolute())]
    proc = subprocess.Popen(
        command,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "SFTP drop on" not in line:
            raise RuntimeError(f"the switch did not start: {line!r}")
        before = _peak_rss_mb(proc.pid)
        report = drop_batch(
            host="127.0.0.1",
            port=port,
            bank=A,
            ssh_key=key_file,
            switch_id="SWCHUS33XXX",
            count=transactions,
            creditors=[Agent(bicfi=B), Agent(bicfi=C)],
            amount=Decimal("1.00"),
            workdir=work,
            timeout=1800,
        )
        peak = _peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    seconds = report.answer_seconds
    return {
        "transactions": report.transactions,
        "file_mb": round(
            sum(f.stat().st_size for f in (work / "sftp" / A / "archive").glob("F*")) / 2**20, 1
        ),
        "seconds": round(seconds, 2),
        "transactions_per_second": round(report.transactions / seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "idle_rss_mb": round(before, 1),
        "group_status": report.group_status,
        "by_status": report.by_status,
        "write_seconds": round(report.write_seconds, 2),
        "upload_seconds": round(report.upload_seconds, 2),
        "store": store or "sqlite (fresh)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_file", description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--store", help="a PostgreSQL URL (default: a fresh SQLite file)")
    parser.add_argument("--config", type=Path, help="switch configuration (default: shipped)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rtpswitch-bench-batch-"))
    try:
        result = run(args.transactions, args.store, work, args.config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
