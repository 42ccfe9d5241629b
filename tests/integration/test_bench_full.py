"""`rtpswitch bench --stack full`: the switch process, the mutual-TLS broker, PostgreSQL and
the signing banks, measured in one short run.

The command brings up what it needs itself (the broker part of the bring-up, its own
vhost `rtpswitch-bench` and database `rtpswitch_fullbench`), so the test only runs it, as
an operator would, and checks the report: the keys of the other stacks and the broker's,
sane values, every payment final, the switch process gone and the vhost removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.fullstack import BENCH_VHOST
from switch.deploy.broker import BrokerNode, ctl

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BROKER_DIR = REPO / "var" / "rabbitmq"


def _bench_switches() -> list[int]:
    """Pids of benchmark switch processes still running (their config is the run's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"rtpswitch-fullbench-" in cmdline and b"switch.cli\0run" in cmdline:
                found.append(int(entry.name))
    return found


def test_full_stack_bench_reports_payments_and_the_broker_ratio() -> None:
    cmd = [sys.executable, "-m", "switch.cli", "bench", "--stack", "full"]
    cmd += ["--seconds", "2", "--json", "--broker-dir", str(BROKER_DIR)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    keys = {"payments_per_second", "p50_ms", "p99_ms", "db_transactions_per_payment"}
    keys |= {"broker_msgs_per_second", "messages_per_payment", "broker_ratio"}
    assert keys <= report.keys()
    assert report["payments"] > 0
    assert report["payments_per_second"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["db_transactions_per_payment"] > 0
    assert report["broker_msgs_per_second"] > 0
    assert report["messages_per_payment"] == pytest.approx(5, abs=0.05)
    expected = (
        report["payments_per_second"]
        * report["messages_per_payment"]
        / report["broker_msgs_per_second"]
    )
    assert report["broker_ratio"] == pytest.approx(expected, rel=0.01)
    assert report["broker_ratio"] > 0
    # every payment sent reached its final status, accepted
    assert report["unfinished"] == 0
    assert report["rejected"] == 0
    assert report["payments_total"] >= report["payments"]
    assert report["cpu_ms_per_payment"]["switch"] > 0

    assert _bench_switches() == []
    vhosts = ctl(BrokerNode(base=BROKER_DIR), "-q", "list_vhosts")
    assert BENCH_VHOST not in vhosts.split()
