"""The batch channel beside a running engine: the SFTP drop, the bridge, the rollover.

The rollover delivers each participant's end-of-day camt.053 to its outbox when a
business day closes (`sftp_bridge.rollover`).

`BatchChannel` is what `rtpswitch run` (when `[batch] port` is set) and `rtpswitch
sftp-bridge` start next to the engine of the clearing leader: file transactions are
cleared by the engine that holds the leader lock, so the drop is served by that process
only (a standby serves nothing until it leads).

The SFTP server reads the banks' SSH public keys from `[batch] authorized_keys` (one
`<PARTICIPANT>.pub` per bank, OpenSSH lines) when it starts; only participants of the
scheme may log in. Its host key is `[batch] host_key` (created on first start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import paramiko

from sftp_bridge.bridge import BatchBridge
from sftp_bridge.rollover import Rollover
from sftp_bridge.server import SftpServer, load_authorized_keys
from switch.engine import Engine
from switch.settings import BatchSettings, Settings, load_demo_participants

__all__ = ["BatchChannel", "serve_embedded"]

log = logging.getLogger("rtpswitch.batch")

_BANK_MEMORY = 20_000
"""Messages each simulated bank of an embedded drop remembers (to spot a message it was
sent twice, and the last statuses of its payments). The drop runs until stopped: with
the simulator's default (a million of each kind of entry) its banks alone would keep
growing, by some 200 bytes per payment cleared (measured on a 30,000-transaction file)."""


class BatchChannel:
    """The SFTP drop and the batch bridge of one engine (`start`, then `stop`)."""

    def __init__(
        self,
        engine: Engine,
        batch: BatchSettings,
        *,
        port: int | None = None,
        authorized: dict[str, list[paramiko.PKey]] | None = None,
    ) -> None:
        self.engine = engine
        self.batch = batch
        self.bridge = BatchBridge(engine, batch.root)
        self.rollover = Rollover(engine, batch.root, batch)
        self._port = batch.port if port is None else port
        self._authorized = authorized
        self.server: SftpServer | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rollover: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port the drop listens on (after `start`)."""
        assert self.server is not None
        return self.server.port

    async def start(self) -> None:
        """Resume interrupted files, then serve the drop."""
        root = Path(self.batch.root)
        root.mkdir(parents=True, exist_ok=True)
        authorized = self._authorized
        if authorized is None:
            keys = Path(self.batch.authorized_keys)
            authorized = load_authorized_keys(keys) if keys.is_dir() else {}
        known = set(self.engine.ctx.directory)
        for participant in sorted(set(authorized) - known):
            log.warning("SFTP keys of %s ignored: not a participant of the scheme", participant)
        authorized = {p: k for p, k in authorized.items() if p in known}
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.bridge.run(self._stop))
        self._rollover = asyncio.create_task(self.rollover.run(self._stop))
        await asyncio.sleep(0)  # the bridge knows its loop before the first completion
        self.server = SftpServer(
            root,
            Path(self.batch.host_key),
            authorized,
            self.bridge.completed,
            host=self.batch.host,
            port=self._port,
            max_file_size=self.batch.max_file_bytes,
        )
        await asyncio.to_thread(self.server.start)
        log.info(
            "SFTP drop on %s:%d for %d participants (files in %s)",
            self.batch.host,
            self.server.port,
            len(authorized),
            root,
        )

    async def stop(self) -> None:
        """Stop serving; a file being cleared is left to resume at the next start."""
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        self._stop.set()
        for task in (self._task, self._rollover):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.to_thread(self.bridge.close)


async def serve_embedded(
    settings: Settings,
    stop: asyncio.Event,
    *,
    port: int | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """The batch channel on the embedded switch, until `stop` is set.

    The engine runs on `settings.store` (SQLite by default) with the in-process
    transport; the participants file's banks are simulated in this process (they answer
    the payments credited to them, with the behaviours of their accounts). Messages are
    not signed in-process, so batch files are taken without a signature check. The
    participants file's banks are registered and, on a scheme never funded, funded.
    `on_ready` gets the drop's port once it serves.
    """
    from simulators.bank import SimulatedBank
    from switch.core.money import to_minor
    from switch.service import onboard
    from switch.store.base import open_store
    from switch.transport import LocalNetwork

    store = open_store(settings.store)
    banks: list[SimulatedBank] = []
    tasks: list[asyncio.Task[None]] = []
    channel: BatchChannel | None = None
    try:
        await store.migrate()
        _, to_fund = await onboard(store, settings)
        network = LocalNetwork()
        engine = Engine(settings=settings, store=store, transport=network.switch)
        await engine.start()
        for dp in to_fund:
            await engine.fund(dp.participant.id, to_minor(dp.fund), "opening-position")
        for dp in load_demo_participants(
            settings.service.participants, exponent=settings.scheme.exponent
        ):
            p = dp.participant
            bank = SimulatedBank(
                bicfi=p.id,
                member_id=p.member_id,
                name=p.name,
                channel=network.connect(p.id),
                behaviours=dp.accounts,
                response_timeout=settings.response_timeout,
                name_agents_by="USABA" if dp.names_agents_by == "USABA" else "BICFI",
                max_tracked=_BANK_MEMORY,
            )
            banks.append(bank)
            tasks.append(asyncio.create_task(bank.run()))
        channel = BatchChannel(engine, settings.batch, port=port)
        await channel.start()
        if on_ready is not None:
            on_ready(channel.port)
        await engine.run(stop)
    finally:
        if channel is not None:
            await channel.stop()
        for bank in banks:
            bank.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
