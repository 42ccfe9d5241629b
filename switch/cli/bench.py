"""`rtpswitch bench`: clearing throughput and latency through the real engine and store.

`--stack embedded|postgres`: the engine and the simulated banks in this process, on the
in-process transport. `--stack full`: the switch as its own process on PostgreSQL and
the mutual-TLS broker, the banks signing and verifying over AMQP, and the broker's own
ceiling measured in the same run (see `simulators.fullstack`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from switch.settings import Settings, SettingsError, load_settings

DEFAULT_PG_DB = "rtpswitch_bench"
FULL_WINDOW = 200
"""Payments in flight in the full stack's closed loop (unless --window says otherwise)."""


async def _postgres_url(name: str) -> str:
    from switch.store.testing import ensure_test_database, reset_database

    url = await ensure_test_database(name)
    await reset_database(url)
    return url


def _recent(settings: Settings, recent: int) -> Settings:
    """`settings` with `engine.recent_payments` = `recent` (checked as in the config file)."""
    least = 4 * settings.engine.batch_size
    if recent < least:
        raise SettingsError(f"--recent-payments must be at least 4 x engine.batch_size ({least})")
    return replace(settings, engine=replace(settings.engine, recent_payments=recent))


def alias_overhead(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """What paying aliases costs, from (plain, alias) payments/s of interleaved pairs.

    A difference is the alias run's shortfall against its pair's plain run, in percent
    (positive: the alias run was slower). The overhead is the mean of the differences.
    """
    if not pairs or any(plain <= 0 or alias < 0 for plain, alias in pairs):
        raise ValueError("alias pairs need at least one pair, with a plain rate above 0")
    differences = [(plain - alias) / plain * 100 for plain, alias in pairs]
    return {
        "pairs": len(pairs),
        "differences_percent": [round(d, 2) for d in differences],
        "alias_overhead_percent": round(statistics.mean(differences), 2),
        "median_percent": round(statistics.median(differences), 2),
        "plain_payments_per_second": round(statistics.mean(p for p, _ in pairs), 1),
        "alias_payments_per_second": round(statistics.mean(a for _, a in pairs), 1),
    }


def _run_alias_pairs(args: argparse.Namespace) -> int:
    """`--alias-pairs N`: N pairs of runs, one plain and one paying aliases, each in a
    fresh process, the order alternating (plain first in odd pairs) so that a machine
    getting faster or slower during the runs weighs on both sides alike."""
    refused = [
        flag
        for flag, given in (
            ("--stack full", args.stack == "full"),
            ("--aliases", args.aliases),
            ("--lookups", args.lookups),
            ("--rate", args.rate is not None),
        )
        if given
    ]
    if refused:
        print(
            f"rtpswitch bench: --alias-pairs compares closed-loop runs of the engine "
            f"(embedded or postgres); it cannot be combined with {', '.join(refused)}",
            file=sys.stderr,
        )
        return 2
    if args.alias_pairs < 1:
        print("rtpswitch bench: --alias-pairs must be at least 1", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "switch.cli", "bench", "--stack", args.stack]
    command += ["--seconds", str(args.seconds), "--json"]
    for flag, value in (
        ("--store", args.store),
        ("--window", args.window),
        ("--recent-payments", args.recent_payments),
        ("--config", args.config),
    ):
        if value is not None:
            command += [flag, str(value)]
    pairs: list[tuple[float, float]] = []
    for n in range(1, args.alias_pairs + 1):
        rates: dict[bool, float] = {}
        for aliases in (False, True) if n % 2 else (True, False):
            done = subprocess.run(
                command + (["--aliases"] if aliases else []), capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                print(f"rtpswitch bench: pair {n}: a run failed", file=sys.stderr)
                return done.returncode
            rates[aliases] = float(json.loads(done.stdout)["payments_per_second"])
        pairs.append((rates[False], rates[True]))
        if not args.json:
            plain, alias = pairs[-1]
            print(f"pair {n}: plain {plain:.0f} payments/s, every payment to an alias {alias:.0f}")
    result = alias_overhead(pairs)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"alias resolution costs {result['alias_overhead_percent']:.1f} % of the payments/s "
            f"(mean of {result['pairs']} pairs; median {result['median_percent']:.1f} %): "
            f"{result['plain_payments_per_second']:.0f} -> "
            f"{result['alias_payments_per_second']:.0f} payments/s"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the parsed options."""
    from simulators.load import run_load, run_lookups

    if args.seconds <= 0:
        print("rtpswitch bench: --seconds must be positive", file=sys.stderr)
        return 2
    if args.alias_pairs is not None:
        return _run_alias_pairs(args)
    if args.stack == "full":
        return _run_full(args)
    if args.window is None:
        args.window = 1000
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
            if args.recent_payments is not None:
                settings = _recent(settings, args.recent_payments)
            if args.lookups:
                looked = asyncio.run(
                    run_lookups(settings, seconds=args.seconds, window=args.window)
                )
            else:
                result = asyncio.run(
                    run_load(
                        settings,
                        seconds=args.seconds,
                        rate=args.rate,
                        window=args.window,
                        aliases=args.aliases,
                    )
                )
        except (SettingsError, ValueError) as exc:
            print(f"rtpswitch bench: {exc}", file=sys.stderr)
            return 2
    if args.lookups:
        if args.json:
            json.dump(looked.as_json(), sys.stdout)
            sys.stdout.write("\n")
        else:
            print(
                f"{looked.lookups} alias lookups (acmt.023 -> acmt.024) in "
                f"{looked.seconds:.1f} s on {looked.store}: {looked.lookups_per_second:.0f} "
                f"lookups/s, p50 {looked.p50_ms:.1f} ms, p99 {looked.p99_ms:.1f} ms, "
                f"{looked.found} found, {looked.refused} refused, "
                f"{looked.db_transactions_per_lookup:.3f} DB transactions per lookup"
            )
        return 0
    if args.json:
        json.dump(result.as_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"{result.payments} payments in {result.seconds:.1f} s on {result.store} "
            f"({result.mode}): {result.payments_per_second:.0f} payments/s, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
            f"{result.db_transactions_per_payment:.3f} DB transactions and "
            f"{result.db_round_trips_per_payment:.3f} round trips per payment; "
            f"{result.deliveries_per_batch:.0f} deliveries per batch, ms per batch: "
            + ", ".join(f"{stage} {ms:.1f}" for stage, ms in result.stage_ms.items())
        )
    return 0


def _run_full(args: argparse.Namespace) -> int:
    from simulators.fullstack import FullStackError, run_full_stack
    from switch.deploy.broker import BrokerError
    from switch.security.pki import PkiError
    from switch.transport.amqp import AmqpTransportError

    store = args.store
    if store is not None and not store.startswith(("postgresql:", "postgres:")):
        print("rtpswitch bench: --store must be a postgresql:// URL", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
        result = run_full_stack(
            settings,
            config=args.config,
            store=store,
            broker_dir=args.broker_dir,
            seconds=args.seconds,
            rate=args.rate,
            window=args.window or FULL_WINDOW,
            broker_seconds=args.broker_seconds,
        )
    except (SettingsError, ValueError) as exc:
        print(f"rtpswitch bench: {exc}", file=sys.stderr)
        return 2
    except (FullStackError, BrokerError, PkiError, AmqpTransportError, OSError) as exc:
        print(f"rtpswitch bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result.as_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"{result.payments} payments in {result.seconds:.1f} s through the switch process, "
            f"{result.broker} and {result.store} ({result.mode}): "
            f"{result.payments_per_second:.0f} payments/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, {result.db_transactions_per_payment:.3f} DB "
            f"transactions per payment; broker ceiling {result.broker_msgs_per_second:.0f} "
            f"msg/s ({result.broker_message_bytes} B, confirms on), "
            f"{result.messages_per_payment:.2f} messages per payment, "
            f"ratio {result.broker_ratio:.2f}"
        )
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in result.cpu_ms_per_payment.items())
        print(f"CPU ms per payment: {cpu}")
    if result.unfinished or result.rejected:
        print(
            f"rtpswitch bench: {result.unfinished} payments without a final status, "
            f"{result.rejected} rejected (of {result.payments_total})",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: Any) -> None:
    """Add the `bench` sub-command."""
    p = sub.add_parser("bench", help="measure clearing throughput and latency")
    p.add_argument("--stack", choices=("embedded", "postgres", "full"), default="embedded")
    p.add_argument("--store", help="store URL (default: a fresh SQLite file / test database)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--rate", type=float, help="open loop at this many payments/s")
    p.add_argument(
        "--window",
        type=int,
        help=f"payments in flight (closed loop; default 1000, full stack {FULL_WINDOW})",
    )
    p.add_argument(
        "--broker-seconds",
        type=float,
        default=3.0,
        help="full stack: how long the broker's ceiling is measured",
    )
    p.add_argument(
        "--broker-dir",
        type=Path,
        default=Path("var/rabbitmq"),
        help="full stack: the broker node's files (as for scripts/bringup)",
    )
    p.add_argument(
        "--aliases",
        action="store_true",
        help="every payment pays an alias the switch resolves (embedded, postgres)",
    )
    p.add_argument(
        "--alias-pairs",
        type=int,
        metavar="N",
        help="what paying aliases costs: N pairs of closed-loop runs (plain, every payment "
        "to an alias), each in a fresh process, the order alternating; prints the mean "
        "difference (embedded, postgres)",
    )
    p.add_argument(
        "--lookups",
        action="store_true",
        help="measure alias lookups (acmt.023 -> acmt.024) instead of payments",
    )
    p.add_argument(
        "--recent-payments",
        type=int,
        help="final payments the engine keeps in memory (engine.recent_payments): a small "
        "number measures a long-running switch, whose older payments are in the store only "
        "(embedded, postgres)",
    )
    p.add_argument("--config", type=Path, help="switch configuration (TOML)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)
