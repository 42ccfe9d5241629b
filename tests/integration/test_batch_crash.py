"""A batch file survives kill -9 mid-file on PostgreSQL: resumed, nothing cleared twice.

`rtpswitch sftp-bridge --embedded` runs in its own process on PostgreSQL; bank A uploads
a file of 3,000 transactions over SFTP; once part of it is decided, the process is
killed with SIGKILL. A new process on the same database and trees must resume the file
where it stopped and answer it: one status per transaction, each transaction decided
once (one payment per UETR, one batch item per index), every payment final, exactly
the settled ones debited, and `rtpswitch ledger check` satisfied.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from lxml import etree

from participants.batchfile import BatchTransaction, write_batch_file
from switch.iso20022.views import Agent
from switch.store.testing import ensure_test_database, reset_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
A, B = "BNKAUS33XXX", "BNKBUS33XXX"
COUNT = 3000
Q = "{urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(url: str, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switch.cli",
            "sftp-bridge",
            "--embedded",
            "--store",
            url,
            "--port",
            str(port),
            "--root",
            str(cwd / "sftp"),
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert "SFTP drop on" in line, line
    return proc


def _upload(port: int, key: paramiko.PKey, data: bytes) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1", port=port, username=A, pkey=key, allow_agent=False, look_for_keys=False
    )
    try:
        sftp = client.open_sftp()
        with sftp.open("/inbox/.big.xml.part", "wb") as f:
            f.write(data)
        sftp.rename("/inbox/.big.xml.part", "/inbox/big.xml")
    finally:
        client.close()


async def _decided(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM batch_items")
        return n
    finally:
        await conn.close()


def test_kill_minus_nine_mid_file_then_resume(tmp_path: Path) -> None:
    url = asyncio.run(ensure_test_database("rtpswitch_batch_crash"))
    asyncio.run(reset_database(url))
    private = ed25519.Ed25519PrivateKey.generate()
    key_file = tmp_path / "a_ssh"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    keys = tmp_path / "var" / "sftp" / "keys"
    keys.mkdir(parents=True)
    (keys / f"{A}.pub").write_text(f"{key.get_name()} {key.get_base64()}\n")
    uetrs = [str(uuid.uuid4()) for _ in range(COUNT)]
    path = tmp_path / "big.xml"
    write_batch_file(
        path,
        sender=Agent(bicfi=A),
        switch=Agent(bicfi="SWCHUS33XXX"),
        msg_id="BCRASH000001",
        created=datetime.now(UTC),
        settlement_date=datetime.now(UTC).date(),
        transactions=(
            BatchTransaction(
                uetr=u,
                end_to_end_id=f"E2E-{i}",
                tx_id=f"TX-{i}",
                amount=Decimal("1.00"),
                creditor_agent=Agent(bicfi=B),
                creditor_name="Bob Jones",
                creditor_account="200300400",
                debtor_name="Alice Smith",
                debtor_account="100200300",
            )
            for i, u in enumerate(uetrs)
        ),
        signer=None,
    )
    port = _free_port()
    proc = _start(url, port, tmp_path)
    try:
        _upload(port, key, path.read_bytes())
        deadline = time.monotonic() + 60
        while asyncio.run(_decided(url)) < COUNT // 10:
            assert time.monotonic() < deadline, "the file did not start clearing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    decided_at_kill = asyncio.run(_decided(url))
    assert decided_at_kill < COUNT, "the file finished before the kill"

    outbox = tmp_path / "sftp" / A / "outbox"
    proc = _start(url, port, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not list(outbox.glob("*.pacs.002.001.10.xml")):
            assert time.monotonic() < deadline, "no status file after the restart"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    (status_file,) = list(outbox.glob("*.pacs.002.001.10.xml"))
    doc = etree.parse(str(status_file)).getroot()
    txs = doc.findall(f".//{Q}TxInfAndSts")
    assert len(txs) == COUNT
    assert sorted(t.findtext(f"{Q}OrgnlUETR") or "" for t in txs) == sorted(uetrs)
    statuses = {t.findtext(f"{Q}TxSts") for t in txs}
    assert statuses <= {"ACSC", "RJCT"}
    settled = sum(t.findtext(f"{Q}TxSts") == "ACSC" for t in txs)

    async def books() -> tuple[int, int, int, int]:
        conn = await asyncpg.connect(url)
        try:
            items = await conn.fetchval("SELECT count(DISTINCT idx) FROM batch_items")
            payments = await conn.fetchval(
                "SELECT count(*) FROM payments WHERE uetr = ANY($1::text[])", uetrs
            )
            open_ = await conn.fetchval(
                "SELECT count(*) FROM payments WHERE uetr = ANY($1::text[]) AND state NOT IN "
                "('settled', 'rejected', 'timed_out')",
                uetrs,
            )
            done = await conn.fetchval(
                "SELECT count(*) FROM payments WHERE uetr = ANY($1::text[]) AND state = 'settled'",
                uetrs,
            )
            return items, payments, open_, done
        finally:
            await conn.close()

    items, payments, open_, done = asyncio.run(books())
    assert (items, payments, open_) == (COUNT, COUNT, 0)
    assert done == settled
    check = subprocess.run(
        [sys.executable, "-m", "switch.cli", "ledger", "check", "--store", url],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
