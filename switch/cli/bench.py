"""`rtpswitch bench`: clearing throughput and latency through the real engine and store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from switch.settings import SettingsError, load_settings

DEFAULT_PG_DB = "rtpswitch_bench"


async def _postgres_url(name: str) -> str:
    from switch.store.testing import ensure_test_database, reset_database

    url = await ensure_test_database(name)
    await reset_database(url)
    return url


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the parsed options."""
    from simulators.load import run_load

    if args.seconds <= 0:
        print("rtpswitch bench: --seconds must be positive", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rtpswitch-bench-") as tmp:
        store = args.store
        if store is None:
            if args.stack == "postgres":
                store = asyncio.run(_postgres_url(DEFAULT_PG_DB))
            else:
                store = f"sqlite:///{Path(tmp) / 'bench.db'}"
        elif args.stack == "postgres" and not store.startswith(("postgresql:", "postgres:")):
            print("rtpswitch bench: --store must be a postgresql:// URL", file=sys.stderr)
            return 2
        try:
            settings = load_settings(args.config, store=store)
            result = asyncio.run(
                run_load(settings, seconds=args.seconds, rate=args.rate, window=args.window)
            )
        except (SettingsError, ValueError) as exc:
            print(f"rtpswitch bench: {exc}", file=sys.stderr)
            return 2
    if args.json:
        json.dump(result.as_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"{result.payments} payments in {result.seconds:.1f} s on {result.store} "
            f"({result.mode}): {result.payments_per_second:.0f} payments/s, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
            f"{result.db_transactions_per_payment:.3f} DB transactions and "
            f"{result.db_round_trips_per_payment:.3f} round trips per payment"
        )
    return 0


def register(sub: Any) -> None:
    """Add the `bench` sub-command."""
    p = sub.add_parser("bench", help="measure clearing throughput and latency")
    p.add_argument("--stack", choices=("embedded", "postgres"), default="embedded")
    p.add_argument("--store", help="store URL (default: a fresh SQLite file / test database)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--rate", type=float, help="open loop at this many payments/s")
    p.add_argument("--window", type=int, default=1000, help="payments in flight (closed loop)")
    p.add_argument("--config", type=Path, help="switch configuration (TOML)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)
