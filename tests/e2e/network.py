"""Helpers for the network end-to-end test: the switch and the banks as real processes.

The test runs `rtpswitch run` and `rtpswitch simulate` as subprocesses on the project's
RabbitMQ node (mutual TLS) and on PostgreSQL, isolated from other runs that share them:
its own virtual host (`rtpswitch-e2e`, provisioned here next to the bring-up's, without
touching anything else on the node), its own database (`rtpswitch_network`) and its own
configuration file. Every process started here is started in a session of its own and
killed with its group in `Proc.kill` (the switch's reader workers included).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from switch.deploy.broker import BrokerError, BrokerNode, ctl, definitions
from switch.transport.amqp import (
    SWITCH_QUEUE,
    UNATTRIBUTED_QUEUE,
    AmqpSettings,
    participant_queue,
)
from switch.transport.amqp import connect as amqp_connect

REPO: Final = Path(__file__).resolve().parents[2]
PKI: Final = REPO / "var" / "pki"
BROKER_DIR: Final = REPO / "var" / "rabbitmq"
VHOST: Final = "rtpswitch-e2e"
DATABASE: Final = "rtpswitch_network"
SWITCH_ID: Final = "SWCHUS33XXX"
A, B, C, D = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX", "BNKDUS33XXX"
BANKS: Final = (A, B, C, D)
UNKNOWN: Final = "UNKNUS33XXX"
"""A well-formed BICFI that is no participant of the scheme (RC04)."""
RESPONSE_TIMEOUT: Final = 2.0


# --- one run at a time -----------------------------------------------------------------------

RUN_LOCK: Final = Path(tempfile.gettempdir()) / "rtpswitch-e2e-network.lock"


@contextlib.contextmanager
def one_run_at_a_time(timeout: float = 180.0) -> Iterator[None]:
    """Hold the machine-wide lock of this test: the vhost and database are fixed names, so
    two runs of it (from two checkouts, say) take turns instead of resetting each other's."""
    with RUN_LOCK.open("w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"another run of the network test holds {RUN_LOCK} for {timeout:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- the broker's virtual host ----------------------------------------------------------------


@contextlib.contextmanager
def _node_lock(node: BrokerNode) -> Iterator[None]:
    """The lock the bring-up (`ensure_broker`) takes: one provisioning of the node at a time."""
    with (node.base / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _listing(node: BrokerNode, what: str, *columns: str) -> list[dict[str, Any]]:
    """`rabbitmqctl list_<what>` on this test's vhost ([] when the vhost is not there)."""
    try:
        text = ctl(node, "-q", f"list_{what}", "-p", VHOST, *columns, "--formatter", "json")
    except BrokerError:
        return []
    start = text.find("[")
    rows = json.loads(text[start:]) if start >= 0 else []
    return [r for r in rows if isinstance(r, dict)]


def _permissions(rows: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    return {tuple(str(r.get(k)) for k in ("user", "configure", "write", "read")) for r in rows}


def ensure_vhost(node: BrokerNode, participants: Sequence[str], workdir: Path) -> bool:
    """This test's vhost with the scheme's topology and permissions, for the users the
    bring-up made; whether anything had to be (re)made.

    Only this vhost's definitions are imported (an import adds, it deletes nothing): the
    bring-up's vhost, its users and other vhosts are left as they are.
    `switch.deploy.broker.ensure_definitions` is not used, as it also clears the same users'
    permissions on every other vhost. The other way round, a bring-up meanwhile clears
    this vhost's permissions: the test ensures them again before each step that connects.
    """
    wanted = definitions(VHOST, SWITCH_ID, participants)
    del wanted["users"]  # the bring-up's, unchanged
    perms = _permissions(wanted["permissions"])
    queues = {q["name"] for q in wanted["queues"]}

    def ready() -> bool:
        if not perms <= _permissions(_listing(node, "permissions")):
            return False
        return queues <= {str(r.get("name")) for r in _listing(node, "queues", "name")}

    with _node_lock(node):
        if ready():
            return False
        path = workdir / "vhost-definitions.json"
        path.write_text(json.dumps(wanted))
        ctl(node, "-q", "import_definitions", str(path))
        deadline = time.monotonic() + 30.0
        while not ready():  # the import completes asynchronously
            if time.monotonic() > deadline:
                raise AssertionError(f"vhost {VHOST} not provisioned after 30 s")
            time.sleep(0.2)
    return True


def drop_vhost(node: BrokerNode) -> None:
    """Delete this test's vhost (its queues and permissions): the node as the bring-up made
    it, which a later bring-up then finds unchanged."""
    with _node_lock(node), contextlib.suppress(BrokerError):
        ctl(node, "-q", "delete_vhost", VHOST)


def amqp(who: str) -> AmqpSettings:
    """`who`'s broker settings (its TLS pair from the PKI) on this test's vhost."""
    return replace(AmqpSettings.from_pki(PKI, who), vhost=VHOST)


async def purge_all(participants: Sequence[str]) -> None:
    """Empty every queue of this test's vhost, each with the credentials that may read it."""
    owners: list[tuple[str, tuple[str, ...]]] = [(SWITCH_ID, (SWITCH_QUEUE, UNATTRIBUTED_QUEUE))]
    owners += [(p, (participant_queue(p),)) for p in participants]
    for who, queues in owners:
        conn = await amqp_connect(amqp(who), name="e2e purge")
        try:
            channel = await conn.channel()
            for name in queues:
                await (await channel.get_queue(name, ensure=False)).purge()
        finally:
            await conn.close()


# --- configuration ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (for the leader's participant API)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(path: Path, store: str) -> Path:
    """A copy of config/switch.toml for this test: its database, PKI, vhost and timeout."""
    text = (REPO / "config" / "switch.toml").read_text()
    values: dict[str, object] = {
        "store": store,
        "pki_dir": str(PKI),
        "participants": str(REPO / "config" / "demo.toml"),
        "amqp_vhost": VHOST,
        "response_timeout_seconds": RESPONSE_TIMEOUT,
        "participant_api_port": free_port(),
        "api_port": free_port(),
    }
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {json.dumps(value)}", text)
        assert n == 1, f"config/switch.toml: no single {key} line"
    path.write_text(text)
    return path


# --- processes --------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The environment of the processes: no RTPSWITCH_* override of the config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTPSWITCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    """A `rtpswitch` subprocess, its stdout and stderr in files of `workdir`."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(cls, name: str, args: Sequence[str], workdir: Path) -> Proc:
        out, err = workdir / f"{name}.out", workdir / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            popen = subprocess.Popen(
                [sys.executable, "-m", "switch.cli", *args],
                cwd=REPO,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        return cls(name, popen, out, err)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def has_said(self, text: str) -> bool:
        return text in self.stderr

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout:.0f} s:\n{self.tail()}"
            ) from None

    def crash(self) -> None:
        """kill -9 the process itself (not its group: what a crash of it looks like)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM: a graceful stop."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the process's group (its session, started by us), if anything is left."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def tail(self, lines: int = 15) -> str:
        text = self.stderr.splitlines()[-lines:]
        return "\n".join(f"  {self.name}: {line}" for line in text)


def wait_until(what: str, ready: Any, procs: Sequence[Proc], timeout: float) -> None:
    """Poll `ready()` until true; fail after `timeout` or when one of `procs` has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [p for p in procs if not p.alive()]
        if dead or time.monotonic() > deadline:
            why = f"{dead[0].name} exited ({dead[0].popen.returncode})" if dead else "timeout"
            logs = "\n".join(p.tail() for p in procs)
            raise AssertionError(f"waiting for {what}: {why}\n{logs}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Payments:
    """What one simulated bank pays: `count` payments round robin over `to`."""

    count: int
    to: tuple[str, ...]
    amount: str = "10.00"
    account: str | None = None
    rate: float | None = None

    def args(self) -> list[str]:
        out = ["--pay", str(self.count), "--amount", self.amount]
        for bank in self.to:
            out += ["--to", bank]
        if self.account is not None:
            out += ["--account", self.account]
        if self.rate is not None:
            out += ["--rate", str(self.rate)]
        return out


def simulate(
    config: Path, bank: str, pays: Payments | None, seconds: float, workdir: Path, label: str
) -> Proc:
    """`rtpswitch simulate` for `bank` for `seconds`, paying as `pays` says."""
    args = ["simulate", "--config", str(config), "--bank", bank, "--seconds", str(seconds)]
    args += pays.args() if pays is not None else []
    return Proc.start(f"{label}-{bank}", args, workdir)


@dataclass
class Report:
    """A simulated bank's JSON report."""

    bank: str
    data: dict[str, Any]
    finals: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, proc: Proc) -> Report:
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"{proc.name}: no JSON report\n{proc.tail()}") from None
        payments = data.get("payments", {})
        return cls(data["bank"], data, Counter(payments.get("final", {})))

    @property
    def sent(self) -> int:
        return int(self.data.get("payments", {}).get("sent", 0))

    @property
    def pending(self) -> int:
        return int(self.data.get("payments", {}).get("pending", 0))

    def counter(self, name: str) -> int:
        return int(self.data["counters"].get(name, 0))


def run_async(coro: Any) -> Any:
    """Run a coroutine from the (synchronous) test."""
    return asyncio.run(coro)
