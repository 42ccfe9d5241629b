"""The batch channel beside a running engine: the SFTP drop, the bridge, the rollover.

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
from pathlib import Path

import paramiko

from sftp_bridge.bridge import BatchBridge
from sftp_bridge.server import SftpServer, load_authorized_keys
from switch.engine import Engine
from switch.settings import BatchSettings

__all__ = ["BatchChannel"]

log = logging.getLogger("rtpswitch.batch")


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
        self._port = batch.port if port is None else port
        self._authorized = authorized
        self.server: SftpServer | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.bridge.close)
