"""`rtpswitch bench --stack embedded`: one short run, as an operator would start it.

The report carries the figures of the issue (throughput, latency, DB transactions) and
where the engine's batches spent their time, stage by stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`rtpswitch bench --stack embedded ARGS...`, run as an operator would run it."""
    cmd = [sys.executable, "-m", "switch.cli", "bench", "--stack", "embedded", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _report(*args: str) -> dict[str, Any]:
    """The `--json` report of a bench run that must succeed."""
    done = _bench(*args, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_embedded_bench_reports_throughput_latency_and_the_engine_stages() -> None:
    report = _report("--seconds", "1")

    assert report["payments"] > 0
    assert report["payments_per_second"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["db_transactions_per_payment"] > 0
    assert set(report["stage_ms"]) == {"read", "decide", "commit", "send"}
    assert report["stage_ms"]["commit"] > 0
    assert report["stage_ms"]["decide"] > 0
    # Each payment is two deliveries (its pacs.008, the creditor's pacs.002), in batches.
    assert report["deliveries_per_batch"] >= 1


def test_bench_with_few_recent_payments_clears_from_the_store_and_refuses_too_few() -> None:
    report = _report("--seconds", "4", "--recent-payments", "1024")
    assert report["payments"] > 1024  # more finals than memory keeps: recalled from the store
    assert report["payments_per_second"] > 0

    done = _bench("--seconds", "1", "--recent-payments", "100", timeout=60)
    assert done.returncode == 2
    assert "--recent-payments must be at least 4 x engine.batch_size (1024)" in done.stderr


def test_lookup_bench_answers_every_lookup_one_in_ten_not_found() -> None:
    report = _report("--lookups", "--seconds", "1")

    assert report["lookups"] > 0
    assert report["lookups_per_second"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["refused"] == 0  # the banks' buckets are lifted for the run
    # One lookup in ten asks about an alias nobody registered; the rest are found.
    assert 0.85 <= report["found"] / report["lookups"] <= 0.95


def test_alias_pairs_compare_plain_runs_with_runs_that_pay_aliases() -> None:
    report = _report("--alias-pairs", "1", "--seconds", "1")

    assert report["pairs"] == 1 and len(report["differences_percent"]) == 1
    plain, alias = report["plain_payments_per_second"], report["alias_payments_per_second"]
    assert plain > 0 and alias > 0
    expected = round((plain - alias) / plain * 100, 2)
    assert abs(report["alias_overhead_percent"] - expected) <= 0.05
    assert report["median_percent"] == report["alias_overhead_percent"]


def test_alias_pairs_refuse_what_they_cannot_compare() -> None:
    for extra, named in (
        (["--aliases"], "--aliases"),
        (["--rate", "100"], "--rate"),
        (["--lookups"], "--lookups"),
    ):
        done = _bench("--alias-pairs", "2", "--seconds", "1", *extra, timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"cannot be combined with {named}" in done.stderr
    done = _bench("--alias-pairs", "0", "--seconds", "1", timeout=60)
    assert done.returncode == 2 and "--alias-pairs must be at least 1" in done.stderr
