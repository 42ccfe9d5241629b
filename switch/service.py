"""`rtpswitch run`: the switch as a network node, on PostgreSQL and the mutual-TLS broker.

Theory of operation. Any number of switch processes may run against the same database
and queues; exactly one of them clears at a time. Each process first takes the
switch's leader lock, a PostgreSQL session advisory lock held on a connection of its
own for as long as the process clears. The others wait for it (hot standby): only a
process holding the lock connects to the broker and consumes, so two processes never
process a message, and the in-memory state each engine keeps is never shared. When the
leader stops or dies (kill -9 included), PostgreSQL ends its session and releases the
lock; the broker puts the deliveries it had not acknowledged back on the queue; a
standby takes the lock, rebuilds its state from the store, and goes on from there
(byte-identical redeliveries get the answers already committed). A leader that loses
its lock connection stops at once rather than risk clearing beside a new leader.

With `[batch] port` (or `rtpswitch sftp-bridge`), the leader also serves the SFTP drop of
the batch channel (`sftp_bridge.service.BatchChannel`): file transactions are cleared by
the engine that holds the lock, so only the leader takes files.

With `service.api_port` (or `--api-port`), the leader also serves the operator API and
dashboard (`switch.api.operators`, HTTPS with the scheme CA's server certificate,
operator tokens): it runs beside the engine and hands operator commands to it.

The leader also serves the participants' alias-directory API (HTTPS with mutual TLS,
`switch.api.participants`) when `service.participant_api_port` is set: it shares the
engine's lookup token buckets, so acmt.023 and API lookups draw on the same budget.

On start the leader registers the participants of the participants file that the
store does not know yet (onboarding) and, on a scheme never funded, funds their
opening positions from that file. SIGTERM or SIGINT stops it gracefully: the batch in
hand is decided, committed, acknowledged and sent, then connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import asyncpg

from sftp_bridge.service import BatchChannel
from switch.api import ApiServer
from switch.api.operators import start_operator_api
from switch.api.participants import start_participant_api
from switch.core.money import to_minor
from switch.engine import Engine
from switch.operator_service import OperatorService
from switch.security.messages import MessageSecurity
from switch.settings import DemoParticipant, Settings, SettingsError, load_demo_participants
from switch.store.base import Store, open_store
from switch.transport.amqp import AmqpSettings, AmqpSwitchTransport

log = logging.getLogger("rtpswitch.service")

LEADER_LOCK_KEY: Final = 0x52545053  # "RTPS": one switch clears a database at a time
_POLL: Final = 0.5


@dataclass(slots=True)
class LeaderLock:
    """The switch's leader lock: a session advisory lock on a dedicated connection."""

    conn: asyncpg.Connection
    _listener: Callable[[asyncpg.Connection], None] | None = None

    @classmethod
    async def acquire(cls, url: str, stop: asyncio.Event) -> LeaderLock | None:
        """Wait until this process holds the lock (None if `stop` is set first)."""
        conn = await asyncpg.connect(url)
        try:
            waited = False
            while not stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY):
                    return cls(conn)
                if not waited:
                    log.info("another switch process is clearing; standing by")
                    waited = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL)
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        return None

    def watch(self, lost: Callable[[], None]) -> None:
        """Call `lost` if the lock's connection ends (the lock is then gone)."""

        def listener(_conn: asyncpg.Connection) -> None:
            lost()

        self._listener = listener
        self.conn.add_termination_listener(listener)

    async def release(self) -> None:
        """Give the lock up and close its connection."""
        if self._listener is not None:
            self.conn.remove_termination_listener(self._listener)
            self._listener = None
        with contextlib.suppress(Exception):
            await self.conn.execute("SELECT pg_advisory_unlock($1)", LEADER_LOCK_KEY)
        await self.conn.close()


async def onboard(store: Store, settings: Settings) -> tuple[list[str], list[DemoParticipant]]:
    """Register the participants file's banks the store lacks.

    Returns the ids registered and, on a scheme never funded, the participants whose
    opening positions are to be funded once the engine has started.
    """
    participants = load_demo_participants(
        settings.service.participants, exponent=settings.scheme.exponent
    )
    state = await store.load_state()
    new = [dp for dp in participants if dp.participant.id not in state.participants]
    if new:
        await store.upsert_participants(dp.participant for dp in new)
    to_fund = participants if state.funded == 0 else []
    return [dp.participant.id for dp in new], to_fund


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Clear as the leader (after waiting for the lock) until `stop` is set."""
    svc = settings.service
    if not svc.store.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"service.store must be a postgresql:// URL, not {svc.store!r}")
    switch_id = settings.scheme.switch_bicfi
    security = MessageSecurity(svc.pki_dir, switch_id)
    store = open_store(svc.store)
    await store.migrate()
    lock = await LeaderLock.acquire(svc.store, stop)
    if lock is None:
        await store.close()
        return
    lost = asyncio.Event()

    def on_lost() -> None:
        log.error("leader lock connection lost: stopping")
        lost.set()
        stop.set()

    lock.watch(on_lost)
    amqp = dataclasses.replace(
        AmqpSettings.from_pki(svc.pki_dir, switch_id, host=svc.amqp_host, port=svc.amqp_port),
        vhost=svc.amqp_vhost,
    )
    transport = AmqpSwitchTransport(amqp, switch_id)
    api: ApiServer | None = None
    operator_api: ApiServer | None = None
    operations: OperatorService | None = None
    batch: BatchChannel | None = None
    try:
        await transport.open()
        joined, to_fund = await onboard(store, settings)
        if joined:
            log.info("onboarded %s", ", ".join(joined))
        engine = Engine(settings=settings, store=store, transport=transport, security=security)
        await engine.start()
        for dp in to_fund:
            await engine.fund(dp.participant.id, to_minor(dp.fund), "opening-position")
        if svc.participant_api_port:
            api, _ = await start_participant_api(
                store,
                pki_dir=svc.pki_dir,
                host=svc.participant_api_host,
                port=svc.participant_api_port,
                limiter=engine.lookups,
                claim_period=timedelta(seconds=settings.directory.claim_period),
                participants=lambda: _participant_ids(engine),
            )
            log.info("participant API on %s", api.url)
        if svc.api_port:
            operations = OperatorService(engine, transport=transport)
            operator_api = await start_operator_api(
                operations, pki_dir=svc.pki_dir, host=svc.api_host, port=svc.api_port
            )
            log.info("operator API and dashboard on %s/dashboard", operator_api.url)
        if settings.batch.port:
            batch = BatchChannel(engine, settings.batch)
            await batch.start()
        log.info("clearing as leader on %s", amqp.address)
        await engine.run(stop)
    finally:
        if batch is not None:
            await batch.stop()
        if operator_api is not None:
            await operator_api.stop()
        if operations is not None:
            await operations.stop()
        if api is not None:
            await api.stop()
        await transport.close()
        await store.close()
        await lock.release()
    if lost.is_set():
        raise RuntimeError("leader lock lost while clearing")


async def _participant_ids(engine: Engine) -> Collection[str]:
    return list(engine.ctx.directory)


def run(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; the process exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0
