"""`python -m switch.deploy.bringup`: make what the switch runs on, from nothing, idempotently.

In order:

1. PKI (`--pki`, default `$RTPSWITCH_PKI` else `var/pki`): the scheme CA, current TLS
   and signing credentials for the switch (`scheme.switch_bicfi` of `--config`) and for
   every participant of `--participants` that is not signed off, and the broker's TLS
   server certificate (localhost, 127.0.0.1).
2. Broker (`--broker-dir`, default `var/rabbitmq`): the project's RabbitMQ node, mutual
   TLS on 127.0.0.1:5671, with one user per certificate, its permissions, and the
   topology (see `switch.deploy.broker`). The machine's own RabbitMQ node is not touched.
3. Database (`--database`, default the local server's `rtpswitch`): created if missing,
   then migrated.

Each thing done is printed on a line of its own; the last line says how many changes
were made ("nothing to do" when everything was already there). Exit status: 0 done, 1 a
step could not be done (the message says which and why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from switch.core import ParticipantStatus
from switch.deploy.broker import BrokerError, BrokerNode, BrokerTLS, ensure_broker
from switch.security.pki import PkiError, SchemeCA
from switch.settings import SettingsError, load_demo_participants, load_settings
from switch.store.base import open_store

__all__ = [
    "DEFAULT_BROKER_DIR",
    "DEFAULT_DATABASE",
    "DEFAULT_PKI_DIR",
    "Plan",
    "ensure_database",
    "ensure_pki",
    "main",
    "plan",
    "provision_broker",
]

DEFAULT_PKI_DIR: Final = Path("var/pki")
DEFAULT_BROKER_DIR: Final = Path("var/rabbitmq")
DEFAULT_DATABASE: Final = "postgresql://postgres@127.0.0.1:5432/rtpswitch"
SERVER_NAMES: Final = ("localhost", "127.0.0.1")
_DB_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PROG: Final = "bringup"


class BringupError(Exception):
    """A step of the bring-up cannot be done; the message names the step."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Who needs credentials and broker access: the switch and the live participants."""

    switch_id: str
    participants: tuple[str, ...]


def plan(config: Path | None = None, participants_file: Path | None = None) -> Plan:
    """The switch id from the switch config, the participants from the demo config."""
    settings = load_settings(config)
    banks = load_demo_participants(participants_file, exponent=settings.scheme.exponent)
    live = sorted(
        {b.participant.id for b in banks if b.participant.status != ParticipantStatus.SIGNED_OFF}
    )
    return Plan(switch_id=settings.scheme.switch_bicfi, participants=tuple(live))


def ensure_pki(
    directory: Path, identities: Sequence[str], hostnames: Sequence[str] = SERVER_NAMES
) -> tuple[SchemeCA, list[str]]:
    """The scheme CA with current credentials for `identities` and a server pair."""
    changes = []
    fresh = not (directory / "ca" / "ca.crt").exists()
    ca = SchemeCA.init(directory)
    if fresh:
        changes.append(f"created the scheme CA in {directory}")
    for identity in identities:
        try:
            before = ca.credentials(identity)
            serials: tuple[int, int] | None = (before.tls_serial, before.signing_serial)
        except PkiError:
            serials = None
        after = ca.ensure(identity)
        if serials != (after.tls_serial, after.signing_serial):
            changes.append(f"issued TLS and signing credentials for {identity}")
    server_cert = ca.server_cert_path
    before_cert = server_cert.read_bytes() if server_cert.exists() else b""
    ca.ensure_server(list(hostnames))
    if server_cert.read_bytes() != before_cert:
        changes.append(f"issued the broker's server certificate ({', '.join(hostnames)})")
    return ca, changes


def provision_broker(
    *,
    pki_dir: Path = DEFAULT_PKI_DIR,
    broker_dir: Path = DEFAULT_BROKER_DIR,
    config: Path | None = None,
    participants_file: Path | None = None,
) -> tuple[Plan, BrokerNode, list[str]]:
    """PKI then broker (what the AMQP tests need); the plan, the node and the changes."""
    who = plan(config, participants_file)
    node = BrokerNode(base=broker_dir)
    ca, changes = ensure_pki(pki_dir, [who.switch_id, *who.participants])
    tls = BrokerTLS(
        ca_cert=ca.ca_cert_path, cert=ca.server_cert_path, key=ca.server_key_path, crl=ca.crl_path
    )
    changes += ensure_broker(node, tls, who.switch_id, who.participants)
    return who, node, changes


async def ensure_database(url: str) -> list[str]:
    """The PostgreSQL database at `url`, created if missing and migrated."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgresql", "postgres") or not _DB_NAME.fullmatch(name):
        raise BringupError(f"--database: a postgresql://.../NAME URL is needed, not {url!r}")
    admin = urlunsplit(parts._replace(path="/postgres"))
    changes = []
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                changes.append(f"created database {name}")
            except asyncpg.DuplicateDatabaseError:
                pass  # made meanwhile by another bring-up
    finally:
        await conn.close()
    store = open_store(url)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    changes += [f"applied migration {v} to {name}" for v in applied]
    return changes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m switch.deploy.bringup",
        description="Make the PKI, the RabbitMQ node and the database the switch needs "
        "(idempotent: a second run changes nothing).",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="switch config (default: $RTPSWITCH_CONFIG, "
        "else the shipped config/switch.toml): gives the switch id",
    )
    p.add_argument(
        "--participants", type=Path, help="participants (default: the shipped config/demo.toml)"
    )
    p.add_argument(
        "--pki", type=Path, help=f"PKI directory (default: $RTPSWITCH_PKI, else {DEFAULT_PKI_DIR})"
    )
    p.add_argument(
        "--broker-dir",
        type=Path,
        default=DEFAULT_BROKER_DIR,
        help=f"the broker node's files (default: {DEFAULT_BROKER_DIR})",
    )
    p.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help=f"PostgreSQL database URL (default: {DEFAULT_DATABASE})",
    )
    p.add_argument("--no-broker", action="store_true", help="skip the broker")
    p.add_argument("--no-database", action="store_true", help="skip the database")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bring-up; the exit status."""
    args = _parser().parse_args(argv)
    env_pki = os.environ.get("RTPSWITCH_PKI")
    pki_dir: Path = args.pki or (Path(env_pki) if env_pki else DEFAULT_PKI_DIR)
    changes: list[str] = []
    started = time.monotonic()

    def report(step: str, done: list[str]) -> None:
        for line in done:
            print(f"{step}: {line}", flush=True)
        changes.extend(done)

    step = "config"
    try:
        who = plan(args.config, args.participants)
        print(f"config: switch {who.switch_id}, participants {', '.join(who.participants)}")
        step = "pki"
        ca, done = ensure_pki(pki_dir, [who.switch_id, *who.participants])
        report(step, done)
        print(f"pki: {pki_dir.resolve()} ready")
        if not args.no_broker:
            step = "broker"
            node = BrokerNode(base=args.broker_dir)
            tls = BrokerTLS(
                ca_cert=ca.ca_cert_path,
                cert=ca.server_cert_path,
                key=ca.server_key_path,
                crl=ca.crl_path,
            )
            report(step, ensure_broker(node, tls, who.switch_id, who.participants))
            print(f"broker: node {node.nodename} serving {node.address} ({node.base})")
        if not args.no_database:
            step = "database"
            report(step, asyncio.run(ensure_database(args.database)))
            print(f"database: {_safe_url(args.database)} migrated")
    except (SettingsError, PkiError, BrokerError, BringupError) as exc:
        return _fail(step, str(exc))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(step, f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    summary = f"{len(changes)} change{'s' if len(changes) > 1 else ''}" if changes else ""
    summary = summary or "nothing to do"
    print(f"bring-up: {summary} ({elapsed:.1f} s)")
    return 0


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _fail(step: str, message: str) -> int:
    print(f"{_PROG}: error: {step}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
