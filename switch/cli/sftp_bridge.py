"""`rtpswitch sftp-bridge --config FILE`: the batch channel's SFTP drop (RULEBOOK §7).

By default it runs the switch service of `rtpswitch run` (PostgreSQL, the mutual-TLS
broker, message security) with the SFTP drop on: `--port`, or `[batch] port` of the
configuration, must name a port. File transactions are cleared by the engine that holds
the leader lock, so the drop is served by the leader only.

`--embedded` runs it on the embedded switch instead (the store of `--store` or the
configuration, SQLite by default; the in-process transport; the participants file's
banks simulated in the process; no message signatures): a drop to try batch files on
with no services at all. It prints the drop's address when it serves.

Exit status: 0 stopped by SIGTERM/SIGINT, 1 stopped by a failure (logged), 2 bad
configuration (one line naming the setting).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from switch.settings import SettingsError, load_settings


def run(args: argparse.Namespace) -> int:
    """Serve the SFTP drop until told to stop."""
    from switch import service
    from switch.security.pki import PkiError

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(args.config, store=args.store)
        batch = settings.batch
        if args.port is not None:
            if not 0 <= args.port < 65536:
                raise SettingsError(f"--port out of range: {args.port}")
            batch = dataclasses.replace(batch, port=args.port)
        if args.root is not None:
            batch = dataclasses.replace(batch, root=args.root)
        settings = dataclasses.replace(settings, batch=batch)
        if args.embedded:
            return _embedded(settings, args.port)
        if not batch.port:
            raise SettingsError("batch.port is 0: set [batch] port or pass --port")
        return service.run(settings)
    except (SettingsError, PkiError, ValueError) as exc:
        print(f"rtpswitch sftp-bridge: {exc}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("rtpswitch").exception("the SFTP bridge stopped on a failure")
        return 1


def _embedded(settings: Any, port: int | None) -> int:
    from sftp_bridge.service import serve_embedded

    def ready(bound: int) -> None:
        print(
            f"SFTP drop on {settings.batch.host}:{bound} (trees in {settings.batch.root}, "
            f"store {settings.store}); Ctrl-C stops",
            flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_embedded(settings, stop, port=port, on_ready=ready)

    asyncio.run(main())
    return 0


def register(sub: Any) -> None:
    """Add the `sftp-bridge` sub-command."""
    p = sub.add_parser(
        "sftp-bridge", help="serve the SFTP drop of batch files (with the switch service)"
    )
    p.add_argument("--config", type=Path, help="switch configuration (TOML, [batch] section)")
    p.add_argument("--store", help="override the store URL")
    p.add_argument("--port", type=int, help="SFTP port (overrides batch.port; 0: any free port)")
    p.add_argument("--root", type=Path, help="the participants' trees (overrides batch.root)")
    p.add_argument(
        "--embedded",
        action="store_true",
        help="on the embedded switch (in-process banks, no services) instead of the service",
    )
    p.set_defaults(run=run)
