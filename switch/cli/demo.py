"""`rtpswitch demo`: clear payments between simulated banks and report.

The embedded default runs on SQLite with the in-process transport and needs no services;
`--store postgresql://...` runs the same on PostgreSQL. `--serve --api-port P` keeps the
switch up after the run with the operator API and dashboard on https://127.0.0.1:P
(an admin token is printed) until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switch.security.pki import PkiError
from switch.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from switch.demo import DemoReport

DEMO_STORE = "sqlite:///rtpswitch-demo.db"


def _print(report: DemoReport, as_json: bool) -> None:
    from switch.demo import render

    if as_json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(report))
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Run the demo with the parsed options."""
    from switch.demo import run_demo

    if args.payments < 1:
        print("rtpswitch demo: --payments must be at least 1", file=sys.stderr)
        return 2
    if args.serve and args.api_port is None:
        print("rtpswitch demo: --serve needs --api-port (0: any free port)", file=sys.stderr)
        return 2
    if args.api_port is not None and not 0 <= args.api_port < 65536:
        print(f"rtpswitch demo: --api-port out of range: {args.api_port}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config, store=args.store or DEMO_STORE, response_timeout=args.timeout
        )
        if args.serve:
            report = asyncio.run(_serve(args, settings))
        else:
            report = asyncio.run(
                run_demo(
                    settings,
                    payments=args.payments,
                    dump_dir=args.dump_messages,
                    participants_file=args.participants,
                    seed=args.seed,
                )
            )
            _print(report, args.json)
    except (SettingsError, ValueError, PkiError) as exc:
        print(f"rtpswitch demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rtpswitch demo: {exc}", file=sys.stderr)
        return 1
    return 0 if report.conservation_ok else 1


async def _serve(args: argparse.Namespace, settings: Settings) -> DemoReport:
    """The demo, then the operator API and dashboard until SIGTERM or SIGINT."""
    from switch.demo import Serving, serve_demo

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(report: DemoReport, serving: Serving) -> None:
        _print(report, args.json)
        print(
            f"\nOperator dashboard: {serving.url}\n"
            f"Sign in with this admin token (valid until revoked): {serving.token}\n"
            f"The server certificate is issued by the scheme CA: {serving.ca_certificate}\n"
            "  (trust it, or accept the browser's warning; curl: --cacert <that file>)\n"
            "The API and the dashboard stay up until SIGTERM or Ctrl-C.",
            file=sys.stderr if args.json else sys.stdout,
            flush=True,
        )

    return await serve_demo(
        settings,
        payments=args.payments,
        api_host=args.api_host,
        api_port=args.api_port,
        pki_dir=args.pki_dir or settings.service.pki_dir,
        stop=stop,
        on_ready=ready,
        dump_dir=args.dump_messages,
        participants_file=args.participants,
        seed=args.seed,
    )


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
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the switch, the operator API and the dashboard up after the run",
    )
    p.add_argument("--api-port", type=int, help="operator API port for --serve (0: any)")
    p.add_argument("--api-host", default="127.0.0.1", help="operator API address (--serve)")
    p.add_argument("--pki-dir", type=Path, help="scheme CA for --serve (default var/pki)")
    p.set_defaults(run=run)
