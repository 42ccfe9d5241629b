"""Full-stack benchmark: the switch process, the mutual-TLS broker, PostgreSQL and four
simulated banks, every message signed and verified (`rtpswitch bench --stack full`).

Theory of operation. The switch runs as it does in production (`rtpswitch run`:
leader lock, onboarding, engine with message security, PostgreSQL store, AMQP over
mutual TLS) in a process of its own, with its own interpreter (and the reader process
its engine starts). The four banks run in this process: each is a `SimulatedBank` over
a `participants.connector.BankConnector` (its own TLS certificate and connection,
signing everything it sends and verifying everything it receives) that handles each
message from the switch as it arrives (not one after the other, which would make each
bank wait for the broker's confirm of every answer before taking the next message), and
they are driven as `simulators.load` drives its banks: closed loop (`window` payments in flight, the
highest sustainable throughput) or open loop (`rate` payments/s, latency at a given
load). Latency is measured at the debtor bank, from handing its pacs.008 to the
connector (signing and the broker's confirm included) to its verified ACSC.

Isolation: everything runs on a vhost of its own of the project's RabbitMQ node
(`rtpswitch-bench`: the scheme's topology and permissions, made for the run and deleted
after it, its queues purged before each phase) and on a PostgreSQL database of its own
(`rtpswitch_fullbench`, emptied at every run), so that nothing else using the node or
the server sees the benchmark's messages. The switch process or a bank failing ends
the run at once, with the reason.

The broker's ceiling is measured in the same run, before the payments: the four banks'
identities publish a signed pacs.008's bytes to the switch's inbound queue (confirms on,
persistent, as `AmqpParticipantChannel.send` always publishes) while one consumer with
the switch's identity, in a process of its own, takes them in batches and acknowledges
them as the switch does (`AmqpSwitchTransport`). Its rate (messages consumed per second)
is what the stack's clients could move through this broker on this machine with no work
at all per message; the full stack moves `messages_per_payment` (5: pacs.008 in,
pacs.008 forwarded, pacs.002 in, ACSC, ACCC; counted from the run) per payment, so
`broker_ratio` = payments/s x messages per payment / ceiling says how much of the
broker's capacity the payments use.

DB transactions per payment are read from PostgreSQL's statistics for the database
(`pg_stat_database.xact_commit`), from before the first payment to after the last
message, so they cover every payment of the run, warm-up included. CPU time per payment
is read from /proc for each part of the stack while payments are measured: the banks
(this process), the switch, its reader processes, the database's backends and the
broker (which also serves whatever else uses the node meanwhile). Unlike payments/s, it
hardly depends on what else the machine is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from multiprocessing.queues import Queue as MpQueue

    from participants.connector import BankConnector
    from simulators.bank import SimulatedBank
    from switch.deploy.broker import BrokerNode
    from switch.iso20022.views import Agent
    from switch.settings import Settings
    from switch.transport.amqp import AmqpSettings

__all__ = [
    "BENCH_DB",
    "BENCH_VHOST",
    "FullStackResult",
    "drop_bench_vhost",
    "ensure_bench_vhost",
    "run_full_stack",
]

log = logging.getLogger(__name__)

BENCH_VHOST: Final = "rtpswitch-bench"
BENCH_DB: Final = "rtpswitch_fullbench"
RECEIVED_PER_PAYMENT: Final = 3
"""What the banks receive of a payment: the forwarded pacs.008, the ACSC and the ACCC (and
send 2: the pacs.008 and the pacs.002)."""
OPENING: Final = Decimal("1000000000.00")
READY: Final = "clearing as leader"
"""What the switch logs once it holds the leader lock and consumes."""
_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 30.0
_STATS_FLUSH: Final = 1.2
"""Idle PostgreSQL backends publish their statistics within a second (PostgreSQL 15)."""
_CEILING_WARMUP: Final = 0.5
_CEILING_INFLIGHT: Final = 16
"""Publishes awaiting their confirm per bank connection while measuring the ceiling."""
_CEILING_WINDOW: Final = 256
"""Messages published and not yet consumed, at most, while measuring the ceiling: the
queue stays short, as in the payments (a growing backlog slows the broker down)."""
_DRAIN_TIMEOUT: Final = 10.0


class FullStackError(Exception):
    """The full stack could not be brought up or run; the message says what and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FullStackResult:
    """The figures of one full-stack run."""

    payments: int
    seconds: float
    payments_per_second: float
    p50_ms: float
    p99_ms: float
    db_transactions_per_payment: float
    broker_msgs_per_second: float
    broker_message_bytes: int
    messages_per_payment: float
    payments_total: int
    unfinished: int
    rejected: int
    cpu_ms_per_payment: dict[str, float]
    """CPU time per payment measured of each part of the stack: `banks` (this process),
    `switch`, `switch_readers` (its reader processes), `postgres` (the database's
    backends), `broker` (the RabbitMQ node, whatever else it serves meanwhile)."""
    mode: str
    store: str
    broker: str

    @property
    def broker_ratio(self) -> float:
        """(payments/s x messages per payment) / the broker's msg/s."""
        if not self.broker_msgs_per_second:
            return 0.0
        return self.payments_per_second * self.messages_per_payment / self.broker_msgs_per_second

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (the keys of the other stacks, and the broker's)."""
        return {
            "payments": self.payments,
            "seconds": round(self.seconds, 3),
            "payments_per_second": round(self.payments_per_second, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "db_transactions_per_payment": round(self.db_transactions_per_payment, 4),
            "broker_msgs_per_second": round(self.broker_msgs_per_second, 1),
            "messages_per_payment": round(self.messages_per_payment, 3),
            "broker_ratio": round(self.broker_ratio, 3),
            "broker_message_bytes": self.broker_message_bytes,
            "payments_total": self.payments_total,
            "unfinished": self.unfinished,
            "rejected": self.rejected,
            "cpu_ms_per_payment": self.cpu_ms_per_payment,
            "mode": self.mode,
            "store": self.store,
            "broker": self.broker,
        }


# --- the broker's vhost ---------------------------------------------------------------------


def _projection(kind: str, item: dict[str, Any]) -> str:
    keys = {
        "vhosts": ("name",),
        "permissions": ("user", "vhost", "configure", "write", "read"),
        "exchanges": ("vhost", "name", "type", "durable", "auto_delete", "arguments"),
        "queues": ("vhost", "name", "durable", "auto_delete", "arguments"),
        "bindings": ("vhost", "source", "destination", "routing_key", "arguments"),
        "policies": ("vhost", "name", "pattern", "definition"),
    }[kind]
    return json.dumps([item.get(k) for k in keys], sort_keys=True)


def _lacking(node: BrokerNode, wanted: dict[str, Any]) -> list[str]:
    from switch.deploy.broker import ctl

    text = ctl(node, "-q", "export_definitions", "-", "--format", "json")
    try:
        actual = json.loads(text[text.index("{") :])
    except ValueError:
        raise FullStackError(f"rabbitmqctl export_definitions: unreadable {text[:200]!r}") from None
    out = []
    for kind, items in wanted.items():
        have = {_projection(kind, i) for i in actual.get(kind, [])}
        out += [
            f"{kind}: {i.get('name', i.get('user'))}"
            for i in items
            if _projection(kind, i) not in have
        ]
    return out


@contextlib.contextmanager
def _node_lock(node: BrokerNode) -> Iterator[None]:
    """The lock `switch.deploy.broker.ensure_broker` takes: one provisioning at a time."""
    with (node.base / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_bench_vhost(node: BrokerNode, switch_id: str, participants: Sequence[str]) -> bool:
    """The benchmark's vhost with the scheme's topology and permissions; whether it changed.

    Only this vhost's definitions are imported (the users are the scheme's, made by the
    bring-up): an import adds, it deletes nothing, whereas
    `switch.deploy.broker.ensure_definitions` also deletes every user it was not given,
    such as one another test made for itself meanwhile.
    """
    from switch.deploy.broker import ctl, definitions

    wanted = definitions(BENCH_VHOST, switch_id, participants)
    del wanted["users"]
    with _node_lock(node):
        if not _lacking(node, wanted):
            return False
        path = node.base / "definitions-bench.json"
        path.write_text(json.dumps(wanted, indent=1, sort_keys=True))
        ctl(node, "-q", "import_definitions", str(path))
        deadline = time.monotonic() + 30.0
        while lacking := _lacking(node, wanted):  # the import is asynchronous
            if time.monotonic() > deadline:
                raise FullStackError("vhost definitions incomplete: " + ", ".join(lacking[:8]))
            time.sleep(0.2)
    return True


def drop_bench_vhost(node: BrokerNode) -> None:
    """Delete the benchmark's vhost (queues, permissions): the node as the bring-up made it."""
    from switch.deploy.broker import BrokerError, ctl

    with _node_lock(node):
        try:
            ctl(node, "-q", "delete_vhost", BENCH_VHOST)
        except BrokerError as exc:
            log.warning("%s not deleted: %s", BENCH_VHOST, exc)


@contextlib.contextmanager
def _bench_lock(node: BrokerNode) -> Iterator[None]:
    """One full-stack benchmark at a time on a node (they would share vhost and database)."""
    with (node.base / ".bench.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FullStackError("another full-stack benchmark is running on this node") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _amqp(pki_dir: Path, who: str, node: BrokerNode) -> AmqpSettings:
    from switch.transport.amqp import AmqpSettings

    settings = AmqpSettings.from_pki(pki_dir, who, host=node.host, port=node.port)
    return dataclasses.replace(settings, vhost=BENCH_VHOST)


async def _purge(pki_dir: Path, node: BrokerNode, switch_id: str, banks: Sequence[str]) -> None:
    """Empty every queue of the vhost (each read by its owner's identity)."""
    from switch.transport.amqp import SWITCH_QUEUE, UNATTRIBUTED_QUEUE, connect, participant_queue

    owners: list[tuple[str, tuple[str, ...]]] = [(switch_id, (SWITCH_QUEUE, UNATTRIBUTED_QUEUE))]
    owners += [(b, (participant_queue(b),)) for b in banks]
    for who, queues in owners:
        conn = await connect(_amqp(pki_dir, who, node), name=f"bench purge {who}")
        try:
            channel = await conn.channel()
            for name in queues:
                await (await channel.get_queue(name, ensure=False)).purge()
        finally:
            await conn.close()


# --- the broker's ceiling -------------------------------------------------------------------


def _ceiling_consumer(
    amqp: AmqpSettings,
    switch_id: str,
    ready: MpEvent,
    stop: MpEvent,
    consumed: Synchronized[int],
    out: MpQueue[list[tuple[float, int]]],
) -> None:
    """Child process: consume the switch's queue as the switch does until `stop`, counting
    in `consumed`; put (monotonic time, messages) of every batch taken on `out`."""
    from switch.transport.amqp import AmqpSwitchTransport

    async def consume() -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        async with AmqpSwitchTransport(amqp, switch_id) as switch:
            ready.set()
            while not stop.is_set():
                batch = await switch.receive_batch(256, 0.1)
                if batch:
                    seen.append((time.monotonic(), len(batch)))
                    await switch.ack(batch)
                    consumed.value += len(batch)
        return seen

    out.put(asyncio.run(consume()))


async def _signed_credit_transfer(settings: Settings, debtor: str, creditor: str) -> bytes:
    """A pacs.008 as the load's banks send it, signed with `debtor`'s key."""
    from simulators.bank import SimulatedBank
    from switch.iso20022.views import Agent
    from switch.security.pki import load_credentials
    from switch.security.xmldsig import Signer

    class Capture:
        def __init__(self) -> None:
            self.participant = debtor
            self.sent: list[bytes] = []

        async def send(self, data: bytes) -> None:
            self.sent.append(data)

        async def receive(self, timeout: float | None = None) -> bytes | None:
            return None

    capture = Capture()
    bank = SimulatedBank(bicfi=debtor, member_id="000000001", name="Bench", channel=capture)
    await bank.pay(creditor_agent=Agent(bicfi=creditor), amount=Decimal("42.00"))
    creds = load_credentials(settings.service.pki_dir, debtor)
    return Signer.from_files(creds.signing_key, creds.signing_cert).sign(capture.sent[0])


async def broker_ceiling(
    settings: Settings,
    node: BrokerNode,
    banks: Sequence[str],
    payload: bytes,
    seconds: float,
) -> float:
    """Messages/s from bank connections through the switch's queue to a switch consumer.

    The banks publish as fast as the broker confirms, but no more than `_CEILING_WINDOW`
    messages ahead of the consumer.
    """
    from switch.transport.amqp import AmqpParticipantChannel

    pki_dir = settings.service.pki_dir
    switch_id = settings.scheme.switch_bicfi
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    consumed = ctx.Value("q", 0, lock=False)
    out: MpQueue[list[tuple[float, int]]] = ctx.Queue()
    consumer = ctx.Process(
        target=_ceiling_consumer,
        args=(_amqp(pki_dir, switch_id, node), switch_id, ready, stop, consumed, out),
        name="bench broker consumer",
        daemon=True,
    )
    loop = asyncio.get_running_loop()
    channels = [AmqpParticipantChannel(_amqp(pki_dir, b, node), b) for b in banks]
    consumer.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not await loop.run_in_executor(None, ready.wait, 0.2):
            if not consumer.is_alive() or time.monotonic() > deadline:
                raise FullStackError(
                    "the ceiling's consumer did not connect to the broker "
                    f"(exit status {consumer.exitcode})"
                )
        for ch in channels:
            await ch.open()
        credits = asyncio.Semaphore(_CEILING_WINDOW)

        async def pump(ch: AmqpParticipantChannel) -> None:
            while True:
                await credits.acquire()
                await ch.send(payload)

        async def refill() -> None:
            seen = 0
            while True:
                now = consumed.value
                for _ in range(now - seen):
                    credits.release()
                seen = now
                await asyncio.sleep(0.001)

        pumps = [asyncio.create_task(pump(ch)) for ch in channels for _ in range(_CEILING_INFLIGHT)]
        pumps.append(asyncio.create_task(refill()))
        try:
            await asyncio.wait(pumps, timeout=_CEILING_WARMUP, return_when=asyncio.FIRST_EXCEPTION)
            t0 = time.monotonic()
            await asyncio.wait(pumps, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
            t1 = time.monotonic()
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        for p in pumps:
            failed = None if p.cancelled() else p.exception()
            if failed is not None:
                raise failed
        stop.set()
        try:
            seen = await loop.run_in_executor(None, out.get, True, _STOP_TIMEOUT)
        except queue.Empty:
            raise FullStackError(
                f"the ceiling's consumer gave no count (exit status {consumer.exitcode})"
            ) from None
        await loop.run_in_executor(None, consumer.join, _STOP_TIMEOUT)
    finally:
        stop.set()
        for ch in channels:
            with contextlib.suppress(Exception):
                await ch.close()
        if consumer.is_alive():
            consumer.terminate()
            consumer.join(5.0)
    got = sum(n for t, n in seen if t0 <= t < t1)
    return got / (t1 - t0)


# --- the switch process ---------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def _write_toml(path: Path, tables: dict[str, dict[str, object]]) -> None:
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))


def write_switch_config(
    settings: Settings, directory: Path, banks: Sequence[tuple[str, str, str]]
) -> Path:
    """The switch's configuration (`settings` as TOML) and a participants file funding the
    benchmark's banks; the configuration's path."""
    participants = directory / "participants.toml"
    blocks = [
        "\n".join(
            (
                "[[participant]]",
                f"id = {json.dumps(bic)}",
                f"member_id = {json.dumps(member)}",
                f"name = {json.dumps(name)}",
                f'fund = "{OPENING}"',
                "",
            )
        )
        for bic, member, name in banks
    ]
    participants.write_text("\n".join(blocks))
    scheme, svc, eng = settings.scheme, settings.service, settings.engine
    config = directory / "switch.toml"
    _write_toml(
        config,
        {
            "scheme": {
                "currency": scheme.currency,
                "exponent": scheme.exponent,
                "payment_limit": f"{scheme.payment_limit.to_decimal():f}",
                "switch_bicfi": scheme.switch_bicfi,
                "switch_member_id": scheme.switch_member_id,
            },
            "clearing": {"response_timeout_seconds": settings.response_timeout},
            "engine": {
                "batch_size": eng.batch_size,
                "max_message_bytes": eng.max_message_bytes,
                "read_workers": eng.read_workers,
            },
            "service": {
                "store": svc.store,
                "pki_dir": str(svc.pki_dir.resolve()),
                "participants": str(participants.resolve()),
                "amqp_host": svc.amqp_host,
                "amqp_port": svc.amqp_port,
                "amqp_vhost": svc.amqp_vhost,
                "participant_api_port": 0,  # the bench measures clearing only
            },
        },
    )
    return config


class SwitchProcess:
    """`rtpswitch run --config CONFIG` as a child process, logging to a file."""

    def __init__(self, config: Path, store: str, log_file: Path) -> None:
        self.config = config
        self.store = store
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        """Start the switch process."""
        cmd = [sys.executable, "-m", "switch.cli", "run", "--config", str(self.config)]
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--store", self.store],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  switch: {line}" for line in text[-lines:])

    async def ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Return once the switch clears; FullStackError if it exits or takes too long."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if READY in self.log_file.read_text(errors="replace"):
                    return
            if self.proc.poll() is not None:
                raise FullStackError(
                    f"the switch exited during start-up (status {self.proc.returncode}):\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise FullStackError(
                    f"the switch not clearing after {timeout:.0f} s:\n" + self.tail()
                )
            await asyncio.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not stop in time. Its exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("the switch (pid %d) did not stop in time: killed", proc.pid)
                proc.kill()
                proc.wait()
        return proc.returncode


# --- the payments ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Driven:
    latencies: list[float]
    measured: int
    elapsed: float
    total: int
    unfinished: int
    rejected: int


async def drive(
    banks: Sequence[SimulatedBank],
    agents: Sequence[Agent],
    *,
    seconds: float,
    rate: float | None,
    window: int,
    warmup: float,
    wait: float,
    on_measure: Callable[[], Awaitable[None]] | None = None,
    on_done: Callable[[], None] | None = None,
) -> _Driven:
    """Pay round robin among `banks` as `simulators.load.run_load` does, and measure.

    A payment that cannot be sent (the broker refused or lost the connection) ends the
    run at once with FullStackError; so does cancelling it, and both cancel the payments
    in flight.
    """
    latencies: list[float] = []
    failures: list[Exception] = []
    inflight: set[asyncio.Task[None]] = set()
    measuring = False
    measured = unfinished = rejected = 0
    n = 0
    slots = asyncio.Semaphore(window)
    count = len(banks)

    async def one(i: int) -> None:
        nonlocal measured, unfinished, rejected
        debtor = banks[i % count]
        creditor = agents[(i + 1 + (i // count) % (count - 1)) % count]
        try:
            t0 = time.perf_counter()
            sent = await debtor.pay(
                creditor_agent=creditor, amount=Decimal(100 + i % 9000).scaleb(-2)
            )
            final = await debtor.wait_final(sent.uetr, wait)
            if final is None:
                unfinished += 1
            elif final.status != "ACSC":
                rejected += 1
            elif measuring:
                latencies.append((time.perf_counter() - t0) * 1000)
                measured += 1
            debtor.forget(sent.uetr)
        except Exception as exc:
            failures.append(exc)
        finally:
            slots.release()

    async def pace(until: float) -> None:
        nonlocal n
        start, first = time.perf_counter(), n
        while time.perf_counter() < until and not failures:
            await slots.acquire()
            if rate is not None:
                due = start + (n - first) / rate - time.perf_counter()
                if due > 0:
                    await asyncio.sleep(due)
            t = asyncio.create_task(one(n))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            n += 1

    try:
        await pace(time.perf_counter() + warmup)
        if on_measure is not None:
            await on_measure()
        measuring = True
        t0 = time.perf_counter()
        await pace(t0 + seconds)
        await asyncio.gather(*inflight)
        elapsed = time.perf_counter() - t0
        if on_done is not None:
            on_done()
    finally:
        for t in inflight:
            t.cancel()
    if failures:
        exc = failures[0]
        raise FullStackError(f"a payment failed: {type(exc).__name__}: {exc}") from exc
    latencies.sort()
    return _Driven(latencies, measured, elapsed, n, unfinished, rejected)


_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (0 when it is gone)."""
    fields = _proc_stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


class _Meter:
    """The run's DB transactions (PostgreSQL's statistics of the database) and the CPU time
    of each part of the stack while payments are measured."""

    def __init__(self, url: str, switch_pid: int, broker_pid: int | None) -> None:
        self.url = url
        self.switch_pid = switch_pid
        self.broker_pid = broker_pid
        self.conn: Any = None
        self.queries = 0
        self.groups: dict[str, list[int]] = {}
        self.t0: dict[str, float] = {}
        self.t1: dict[str, float] = {}

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.url, timeout=10)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def xact_commits(self) -> int:
        """Transactions committed in the database (our own queries before this one less)."""
        self.queries += 1
        value = await self.conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value or 0) - (self.queries - 1)

    def _sample(self) -> dict[str, float]:
        return {k: sum(_cpu_seconds(p) for p in pids) for k, pids in self.groups.items()}

    async def start(self) -> None:
        """Payments are measured from now: which processes are the stack's, and their CPU."""
        self.queries += 1
        backends = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        self.groups = {
            "banks": [os.getpid()],
            "switch": [self.switch_pid],
            "switch_readers": _descendants(self.switch_pid),
            "postgres": [int(r["pid"]) for r in backends],
        }
        if self.broker_pid is not None:
            self.groups["broker"] = [self.broker_pid, *_descendants(self.broker_pid)]
        self.t0 = self._sample()

    def stop(self) -> None:
        self.t1 = self._sample()

    def per_payment(self, payments: int) -> dict[str, float]:
        """CPU milliseconds per payment of each part, and their total."""
        out = {k: 1000 * (self.t1[k] - self.t0[k]) / max(payments, 1) for k in self.t0}
        out["total"] = sum(out.values())
        return {k: round(v, 2) for k, v in out.items()}


def _broker_pid(node: BrokerNode) -> int | None:
    try:
        return int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


async def _answering(bank: SimulatedBank, channel: BankConnector) -> None:
    """Receive from the switch and hand each message to `bank`, not waiting for one to be
    handled (answered, which waits for the broker's confirm) before taking the next, as
    a bank's connector would; `SimulatedBank.run` handles one message at a time, which
    over the broker makes each bank a queue of its own. Until cancelled."""
    handling: set[asyncio.Task[None]] = set()

    async def handle(data: bytes) -> None:
        try:
            await bank.handle(data)
        except Exception as exc:  # ends the run (see `_watched`)
            bank.counters["errors"] += 1
            bank.errors.append(exc)

    try:
        while True:
            data = await channel.receive()
            if data is not None:
                task = asyncio.create_task(handle(data))
                handling.add(task)
                task.add_done_callback(handling.discard)
    finally:
        for task in handling:
            task.cancel()


async def _watched(
    driving: Awaitable[_Driven],
    switch: SwitchProcess,
    banks: Sequence[SimulatedBank],
    timeout: float,
) -> _Driven:
    """`driving`, ended early with FullStackError when the switch process stops, a bank
    fails to handle a message, or it takes more than `timeout` seconds."""
    task = asyncio.ensure_future(driving)
    deadline = time.monotonic() + timeout
    try:
        while not task.done():
            await asyncio.wait([task], timeout=0.1)
            if not switch.running:
                raise FullStackError(
                    f"the switch stopped during the run (status {switch.status}):\n" + switch.tail()
                )
            for b in banks:
                if b.errors:
                    exc = b.errors[0]
                    raise FullStackError(f"{b.bicfi} failed: {type(exc).__name__}: {exc}")
            if time.monotonic() > deadline:
                raise FullStackError(f"the payments took more than {timeout:.0f} s")
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])


async def _settled(connectors: Sequence[BankConnector], total: int) -> None:
    """Wait (a while at most) until every message of the run's payments has arrived."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if sum(c.counters["received"] for c in connectors) >= total * RECEIVED_PER_PAYMENT:
            return
        await asyncio.sleep(0.05)


async def _payments(
    settings: Settings,
    banks_spec: Sequence[tuple[str, str, str]],
    meter: _Meter,
    switch: SwitchProcess,
    *,
    seconds: float,
    rate: float | None,
    window: int,
    warmup: float,
) -> tuple[_Driven, float, float]:
    """Run the payments through the started switch: (driven, DB tx/payment, msgs/payment)."""
    from participants.connector import connect
    from simulators.bank import SimulatedBank
    from switch.iso20022.views import USABA, Agent

    scheme = settings.scheme
    switch_agent = Agent(
        bicfi=scheme.switch_bicfi, member_id=scheme.switch_member_id, clearing_system=USABA
    )
    connectors: list[BankConnector] = []
    banks: list[SimulatedBank] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for bic, member, name in banks_spec:
            connector = await connect(settings, bic)
            connectors.append(connector)
            banks.append(
                SimulatedBank(
                    bicfi=bic,
                    member_id=member,
                    name=name,
                    channel=connector,
                    response_timeout=settings.response_timeout,
                    switch=switch_agent,
                )
            )
        tasks = [
            asyncio.create_task(_answering(b, c)) for b, c in zip(banks, connectors, strict=True)
        ]
        await meter.open()
        await asyncio.sleep(_STATS_FLUSH)
        xact0 = await meter.xact_commits()
        wait = settings.response_timeout * 4
        driving = drive(
            banks,
            [Agent(bicfi=bic) for bic, _, _ in banks_spec],
            seconds=seconds,
            rate=rate,
            window=window,
            warmup=warmup,
            wait=wait,
            on_measure=meter.start,
            on_done=meter.stop,
        )
        driven = await _watched(driving, switch, banks, warmup + seconds + wait + _DRAIN_TIMEOUT)
        await _settled(connectors, driven.total)
        await asyncio.sleep(_STATS_FLUSH)
        xact = await meter.xact_commits() - xact0
        messages = sum(c.counters["sent"] + c.counters["received"] for c in connectors)
        refused = sum(c.counters["rejected"] for c in connectors)
        if refused:
            raise FullStackError(f"the banks refused {refused} messages from the switch")
    finally:
        with contextlib.suppress(Exception):
            await meter.close()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
        for c in connectors:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), _STOP_TIMEOUT)
    total = max(driven.total, 1)
    return driven, xact / total, messages / total


# --- all of it ------------------------------------------------------------------------------


async def _run(
    settings: Settings,
    node: BrokerNode,
    banks_spec: Sequence[tuple[str, str, str]],
    workdir: Path,
    *,
    seconds: float,
    rate: float | None,
    window: int,
    warmup: float,
    broker_seconds: float,
    on_switch_started: Callable[[int], None] | None = None,
) -> FullStackResult:
    from simulators.load import percentile

    svc = settings.service
    switch_id = settings.scheme.switch_bicfi
    bank_ids = [b for b, _, _ in banks_spec]
    await _purge(svc.pki_dir, node, switch_id, bank_ids)
    payload = await _signed_credit_transfer(settings, bank_ids[0], bank_ids[1])
    ceiling = await broker_ceiling(settings, node, bank_ids, payload, broker_seconds)
    await _purge(svc.pki_dir, node, switch_id, bank_ids)
    config = write_switch_config(settings, workdir, banks_spec)
    switch = SwitchProcess(config, svc.store, workdir / "switch.log")
    try:
        switch.start()
        await switch.ready()
        if on_switch_started is not None and switch.proc is not None:
            on_switch_started(switch.proc.pid)
        assert switch.proc is not None
        meter = _Meter(svc.store, switch.proc.pid, _broker_pid(node))
        driven, tx_per_payment, msgs_per_payment = await _payments(
            settings,
            banks_spec,
            meter,
            switch,
            seconds=seconds,
            rate=rate,
            window=window,
            warmup=warmup,
        )
    finally:
        status = switch.stop()
    if status not in (0, None):
        log.warning("the switch exited with status %s:\n%s", status, switch.tail())
    return FullStackResult(
        payments=driven.measured,
        seconds=driven.elapsed,
        payments_per_second=driven.measured / driven.elapsed if driven.elapsed else 0.0,
        p50_ms=percentile(driven.latencies, 0.50),
        p99_ms=percentile(driven.latencies, 0.99),
        db_transactions_per_payment=tx_per_payment,
        broker_msgs_per_second=ceiling,
        broker_message_bytes=len(payload),
        messages_per_payment=msgs_per_payment,
        payments_total=driven.total,
        unfinished=driven.unfinished,
        rejected=driven.rejected,
        cpu_ms_per_payment=meter.per_payment(driven.measured),
        mode=f"open loop at {rate:g}/s" if rate is not None else f"closed loop, window {window}",
        store=svc.store.split("@")[-1],
        broker=f"amqps://{node.host}:{node.port}/{BENCH_VHOST}",
    )


async def _fresh_database() -> str:
    from switch.store.testing import ensure_test_database, reset_database

    url = await ensure_test_database(BENCH_DB)
    await reset_database(url)
    return url


def run_full_stack(
    settings: Settings,
    *,
    config: Path | None = None,
    store: str | None = None,
    broker_dir: Path = Path("var/rabbitmq"),
    seconds: float = 10.0,
    rate: float | None = None,
    window: int = 1000,
    warmup: float = 1.0,
    broker_seconds: float = 3.0,
    on_switch_started: Callable[[int], None] | None = None,
) -> FullStackResult:
    """Bring up the broker and the database, measure the broker's ceiling, then the payments.

    `store` (a postgresql:// URL) is used as it is; by default the `rtpswitch_fullbench`
    database is created if missing and emptied. `on_switch_started(pid)` is called once
    the switch process is started (to attach a profiler, say).
    """
    from simulators.load import BANKS
    from switch.deploy.bringup import provision_broker

    if seconds <= 0 or broker_seconds <= 0 or warmup < 0 or window < 1:
        raise ValueError("seconds and broker seconds must be positive, window at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be positive")
    pki_dir = settings.service.pki_dir
    who, node, _ = provision_broker(pki_dir=pki_dir, broker_dir=broker_dir, config=config)
    missing = [b for b, _, _ in BANKS if b not in who.participants]
    if missing:
        raise FullStackError(f"no broker user for {', '.join(missing)} (participants file)")
    with _bench_lock(node):
        ensure_bench_vhost(node, who.switch_id, who.participants)
        try:
            return _run_provisioned(
                settings,
                node,
                store=store,
                seconds=seconds,
                rate=rate,
                window=window,
                warmup=warmup,
                broker_seconds=broker_seconds,
                on_switch_started=on_switch_started,
            )
        finally:
            drop_bench_vhost(node)


def _run_provisioned(
    settings: Settings,
    node: BrokerNode,
    *,
    store: str | None,
    seconds: float,
    rate: float | None,
    window: int,
    warmup: float,
    broker_seconds: float,
    on_switch_started: Callable[[int], None] | None,
) -> FullStackResult:
    from simulators.load import BANKS

    pki_dir = settings.service.pki_dir
    url = store or asyncio.run(_fresh_database())
    bench = dataclasses.replace(
        settings,
        service=dataclasses.replace(
            settings.service,
            store=url,
            pki_dir=pki_dir.resolve(),
            amqp_host=node.host,
            amqp_port=node.port,
            amqp_vhost=BENCH_VHOST,
        ),
    )
    with tempfile.TemporaryDirectory(prefix="rtpswitch-fullbench-") as tmp:
        return asyncio.run(
            _run(
                bench,
                node,
                BANKS,
                Path(tmp),
                seconds=seconds,
                rate=rate,
                window=window,
                warmup=warmup,
                broker_seconds=broker_seconds,
                on_switch_started=on_switch_started,
            )
        )
