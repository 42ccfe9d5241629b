"""The `rtpswitch` command line: one sub-command per operator task.

Every sub-command reports bad input as one line naming the problem (and the field, where
there is one) on stderr, and exits non-zero; a traceback means a bug in the switch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from participants import cli as participant_cmd
from simulators import batch_cli as simulate_batch_cmd
from simulators import cli as simulate_cmd
from switch.cli import admin as admin_cmd
from switch.cli import bench as bench_cmd
from switch.cli import demo as demo_cmd
from switch.cli import directory as directory_cmd
from switch.cli import pki as pki_cmd
from switch.cli import run as run_cmd
from switch.cli import sftp_bridge as sftp_bridge_cmd
from switch.cli import validate as validate_cmd


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="rtpswitch", description="ISO 20022 real-time payments clearing switch"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate_cmd.register(sub)
    demo_cmd.register(sub)
    bench_cmd.register(sub)
    admin_cmd.register(sub)
    directory_cmd.register(sub)
    pki_cmd.register(sub)
    run_cmd.register(sub)
    sftp_bridge_cmd.register(sub)
    participant_cmd.register(sub)
    simulate_cmd.register(sub)
    simulate_batch_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
