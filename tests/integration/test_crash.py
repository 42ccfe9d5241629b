"""Crash safety on PostgreSQL: kill -9 the switch under load, restart, and check the books.

The demo runs in its own process against PostgreSQL, clearing payments as fast as it
can; it is killed with SIGKILL at a different instant each round (during funding, mid
batch, mid send). After every kill a new switch process starts on the same database: it
must finish every payment the dead one left open (each reaches a final state), settle no
payment twice, and keep conservation, as measured in the database and by replaying the
journal. `rtpswitch ledger check` must agree.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from switch.store.testing import ensure_test_database, reset_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _rtpswitch(*args: str) -> list[str]:
    return [sys.executable, "-m", "switch.cli", *args]


@pytest.fixture
async def crash_db() -> str:
    url = await ensure_test_database("rtpswitch_crash")
    await reset_database(url)
    return url


def _stored_payments(url: str) -> int:
    """How many payments the store holds (0 before its tables exist)."""

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM payments"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def _wait_for_payments(url: str, proc: subprocess.Popen[bytes], at_least: int) -> None:
    """Until the running demo has stored `at_least` payments (whatever the machine's speed)."""
    deadline = time.monotonic() + 120
    while _stored_payments(url) < at_least:
        assert proc.poll() is None, "the switch finished before it could be killed"
        assert time.monotonic() < deadline, f"fewer than {at_least} payments after 120 s"
        time.sleep(0.02)


def test_kill_minus_nine_under_load_then_restart(crash_db: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    recovered: list[int] = []
    # Killed while it starts (funding the banks), then once 1,000 and 8,000 payments are
    # stored (mid batch, mid send): by the payments stored, not by time, so that a fast
    # machine does not finish the demo first.
    for round_, (delay, stored) in enumerate(((0.4, 0), (0.0, 1_000), (0.0, 8_000))):
        before = _stored_payments(crash_db)
        proc = subprocess.Popen(
            _rtpswitch(
                "demo",
                "--store",
                crash_db,
                "--payments",
                "40000",
                "--timeout",
                "1",
                "--seed",
                str(round_),
            ),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        _wait_for_payments(crash_db, proc, before + stored)
        assert proc.poll() is None, "the switch finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

        restart = subprocess.run(
            _rtpswitch(
                "demo",
                "--store",
                crash_db,
                "--payments",
                "50",
                "--timeout",
                "1",
                "--json",
                "--seed",
                str(100 + round_),
            ),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=180,
        )
        assert restart.returncode == 0, restart.stderr.decode()[-2000:]
        report = json.loads(restart.stdout)
        recovered.append(report["recovered_open_payments"])
        cons = report["conservation"]
        assert report["conservation_ok"] is True, cons
        assert cons["open_payments"] == 0
        assert cons["payments_settled_twice"] == 0
        assert cons["journal_replay_ok"] and cons["database_ok"]
        assert sum(report["by_status"].values()) == 50
        assert "NONE" not in report["by_status"]

        check = subprocess.run(
            _rtpswitch("ledger", "check", "--store", crash_db),
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # The kills landed while payments were in flight, so the restarts had work to finish.
    assert any(recovered), recovered
