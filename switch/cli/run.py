"""`rtpswitch run --config FILE`: the switch as a service (see `switch.service`).

Needs what `scripts/bringup` makes: the scheme PKI, the broker's mutual-TLS listener
with the switch's and the participants' users and queues, and the PostgreSQL database.
Exit status: 0 stopped by SIGTERM/SIGINT, 1 stopped by a failure (logged), 2 bad
configuration (one line naming the setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from switch.settings import SettingsError, load_settings


def run(args: argparse.Namespace) -> int:
    """Run the switch until it is told to stop."""
    from switch import service
    from switch.security.pki import PkiError

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(args.config, store=args.store)
        if args.api_port is not None:
            if not 0 < args.api_port < 65536:
                raise SettingsError(f"--api-port out of range: {args.api_port}")
            service_settings = dataclasses.replace(settings.service, api_port=args.api_port)
            settings = dataclasses.replace(settings, service=service_settings)
        return service.run(settings)
    except (SettingsError, PkiError, ValueError) as exc:
        print(f"rtpswitch run: {exc}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("rtpswitch").exception("the switch stopped on a failure")
        return 1


def register(sub: Any) -> None:
    """Add the `run` sub-command."""
    p = sub.add_parser("run", help="run the switch as a service (PostgreSQL + mTLS broker)")
    p.add_argument("--config", type=Path, help="switch configuration (TOML, [service] section)")
    p.add_argument("--store", help="override service.store (a postgresql:// URL)")
    p.add_argument(
        "--api-port",
        type=int,
        help="operator API and dashboard port (HTTPS; overrides service.api_port)",
    )
    p.set_defaults(run=run)
