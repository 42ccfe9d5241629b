"""`rtpswitch demo`: clear payments between simulated banks and report.

The embedded default runs on SQLite with the in-process transport and needs no services;
`--store postgresql://...` runs the same on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from switch.settings import SettingsError, load_settings

DEMO_STORE = "sqlite:///rtpswitch-demo.db"


def run(args: argparse.Namespace) -> int:
    """Run the demo with the parsed options."""
    from switch.demo import render, run_demo

    if args.payments < 1:
        print("rtpswitch demo: --payments must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config, store=args.store or DEMO_STORE, response_timeout=args.timeout
        )
        report = asyncio.run(
            run_demo(
                settings,
                payments=args.payments,
                dump_dir=args.dump_messages,
                participants_file=args.participants,
                seed=args.seed,
            )
        )
    except (SettingsError, ValueError) as exc:
        print(f"rtpswitch demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(report))
    return 0 if report.conservation_ok else 1


def register(sub: Any) -> None:
    """Add the `demo` sub-command."""
    p = sub.add_parser("demo", help="clear payments between simulated banks and report")
    p.add_argument("--payments", type=int, default=1000, help="how many (default 1000)")
    p.add_argument("--store", help=f"store URL (default {DEMO_STORE})")
    p.add_argument("--config", type=Path, help="switch configuration (TOML)")
    p.add_argument("--participants", type=Path, help="demo banks (TOML, default config/demo.toml)")
    p.add_argument("--timeout", type=float, help="creditor response timeout, seconds")
    p.add_argument("--dump-messages", type=Path, metavar="DIR", help="write every message here")
    p.add_argument("--seed", type=int, help="random seed for a repeatable mix")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)
