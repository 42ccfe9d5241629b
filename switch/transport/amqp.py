"""AMQP 0-9-1 over mutual TLS (RabbitMQ, aio-pika): the real participant transport.

Theory of operation. Every party connects with a TLS client certificate issued by the
scheme CA and logs in with the EXTERNAL mechanism: the broker takes the certificate's
common name as the user name, so the certificate is the identity and there are no
passwords. The broker also checks the `user_id` property of every message against the
connection's user and closes the channel of a publisher that lies about it. So the
switch attributes an inbound message to the `user_id` the broker validated; a message
without one cannot be attributed and is rejected without requeue, which dead-letters it
to `switch.unattributed` for the operator (the engine never sees it).

Topology (made by `switch.deploy.broker`; clients only use it and declare nothing)::

    bank --publish--> rtpswitch.inbound (direct) --"switch"--> switch.inbound --> switch
    switch --publish--> rtpswitch.outbound (direct) --"<ID>"--> participant.<ID> --> bank
    switch.inbound --rejected--> rtpswitch.unattributed (fanout) --> switch.unattributed

Per-user permissions confine a bank to writing `rtpswitch.inbound` and reading
`participant.<ID>`, and the switch to writing `rtpswitch.outbound` and reading its two
queues. Queues are durable, messages persistent, every publish waits for the broker's
confirm (and is `mandatory`: a message no queue takes is an error, not a silent loss).

Acknowledgements. The switch consumes with manual acks and a prefetch large enough for
two engine batches; `ack` is called once a batch's effects are committed, so a crash
before the commit leaves the messages unacknowledged and the broker delivers them again
to the next consumer (flagged redelivered). Delivery tags belong to a channel: after a
reconnect the deliveries handed out before are not acknowledged (they come back and the
engine recognises them by BizMsgIdr and hash). A bank's `receive` acknowledges the
message it returned before, on the next `receive` (or on `close`): a bank that crashes
while handling a message gets it again. Both sides de-duplicate, which makes redelivery
harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import quote, urlencode

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPConnectionError,
    AMQPError,
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)

from switch.security.pki import load_credentials
from switch.transport.base import Delivery

__all__ = [
    "INBOUND_EXCHANGE",
    "INBOUND_ROUTING_KEY",
    "OUTBOUND_EXCHANGE",
    "SWITCH_QUEUE",
    "UNATTRIBUTED_EXCHANGE",
    "UNATTRIBUTED_QUEUE",
    "VHOST",
    "AmqpConnectError",
    "AmqpParticipantChannel",
    "AmqpRefused",
    "AmqpSettings",
    "AmqpSwitchTransport",
    "AmqpTransportError",
    "connect",
    "participant_queue",
    "tls_context",
]

log = logging.getLogger(__name__)

VHOST: Final = "rtpswitch"
INBOUND_EXCHANGE: Final = "rtpswitch.inbound"
INBOUND_ROUTING_KEY: Final = "switch"
SWITCH_QUEUE: Final = "switch.inbound"
OUTBOUND_EXCHANGE: Final = "rtpswitch.outbound"
UNATTRIBUTED_EXCHANGE: Final = "rtpswitch.unattributed"
UNATTRIBUTED_QUEUE: Final = "switch.unattributed"
CONTENT_TYPE: Final = "application/xml"
_OBSERVE_TIMEOUT: Final = 2.0
"""At most this many seconds for one look at a queue (operator metrics, never clearing)."""


def participant_queue(participant: str) -> str:
    """The queue the switch fills for `participant` and only that participant reads."""
    return f"participant.{participant}"


class AmqpTransportError(Exception):
    """The AMQP transport could not do what was asked; the message says what and where."""


class AmqpConnectError(AmqpTransportError, ConnectionError):
    """No usable connection: broker unreachable, TLS refused, or login refused."""


class AmqpRefused(AmqpTransportError):
    """The broker refused an operation (access refused, unroutable, not confirmed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpSettings:
    """Where the broker is and which credentials to show it (resolved once, immutable)."""

    ca_cert: Path
    cert: Path
    key: Path
    host: str = "127.0.0.1"
    port: int = 5671
    vhost: str = VHOST
    heartbeat: int = 30
    connect_timeout: float = 10.0
    operation_timeout: float = 10.0
    reconnect_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("AMQP host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"AMQP port out of range: {self.port}")
        if not self.vhost:
            raise ValueError("AMQP vhost must not be empty")
        for name in ("connect_timeout", "operation_timeout", "reconnect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AMQP {name} must be positive")
        if self.heartbeat < 0:
            raise ValueError("AMQP heartbeat must be 0 (off) or more seconds")

    @classmethod
    def from_pki(
        cls, directory: Path, participant: str, *, host: str = "127.0.0.1", port: int = 5671
    ) -> AmqpSettings:
        """Settings using `participant`'s current TLS pair from the PKI at `directory`."""
        creds = load_credentials(Path(directory), participant)
        return cls(
            ca_cert=creds.ca_cert, cert=creds.tls_cert, key=creds.tls_key, host=host, port=port
        )

    @property
    def address(self) -> str:
        """`amqps://host:port/vhost`, for messages."""
        return f"amqps://{self._host_part()}:{self.port}/{self.vhost}"

    def _host_part(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def url(self, name: str) -> str:
        """The connection URL: EXTERNAL login (no user, no password), connection `name`."""
        query = urlencode({"auth": "external", "heartbeat": self.heartbeat, "name": name})
        return f"amqps://{self._host_part()}:{self.port}/{quote(self.vhost, safe='')}?{query}"


def tls_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A client TLS context: trust only the scheme CA, TLS 1.2 or later, show `cert`."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise AmqpTransportError(
            f"TLS credentials unusable (ca {ca_cert}, cert {cert}, key {key}): {exc}"
        ) from exc
    return context


async def connect(settings: AmqpSettings, *, name: str) -> AbstractConnection:
    """A connection to the broker over mutual TLS with EXTERNAL login."""
    context = tls_context(settings.ca_cert, settings.cert, settings.key)
    try:
        return await aio_pika.connect(
            settings.url(name), ssl_context=context, timeout=settings.connect_timeout
        )
    except (AMQPError, OSError, TimeoutError) as exc:
        raise AmqpConnectError(
            f"cannot connect to {settings.address} with {settings.cert}: {_describe(exc)}"
        ) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _persistent(data: bytes, user_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        data,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        user_id=user_id,
        content_type=CONTENT_TYPE,
    )


@dataclass(eq=False, slots=True)
class _Consumer:
    """One consuming channel: its deliveries' tags are valid only on it."""

    channel: AbstractChannel
    inbox: asyncio.Queue[AbstractIncomingMessage | None] = field(default_factory=asyncio.Queue)
    unacked: dict[int, AbstractIncomingMessage] = field(default_factory=dict)
    handed: dict[int, Delivery] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not self.channel.is_closed


def _alive(conn: AbstractConnection) -> bool:
    """Open and connected (a connection the broker closed is not `is_closed` in aio-pika)."""
    return not conn.is_closed and conn.connected.is_set()


_REFUSED: Final = (ChannelAccessRefused, ChannelPreconditionFailed, ChannelNotFoundEntity)
"""What the broker says when it refuses an operation (and closes the channel)."""

_LOST: Final = (AMQPConnectionError, AMQPChannelError, ChannelInvalidStateError, ConnectionError)
"""What a lost connection or an otherwise closed channel raises."""


class _Link:
    """One identity's connection to the broker, a confirming publisher and a consumer.

    A closed connection is opened again on next use (retrying for `reconnect_timeout`
    once it has been up before); a closed channel is replaced by a new one.
    """

    def __init__(self, settings: AmqpSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._conn: AbstractConnection | None = None
        self._ever_connected = False
        self._closed = False
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self.consumer: _Consumer | None = None
        self._lock = asyncio.Lock()
        self._observer: tuple[AbstractConnection, AbstractChannel] | None = None
        self._observe_lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        """Connected now (no attempt to connect is made to find out)."""
        return not self._closed and self._conn is not None and _alive(self._conn)

    async def queue_counts(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of `queue` by a passive declare; None if unknown.

        For the operator's metrics: it uses the connection only when it is up (it never
        connects nor waits for a reconnect), on a channel of its own (the broker closes
        the channel of a declare it refuses, say for a queue that does not exist), and
        gives up after `_OBSERVE_TIMEOUT` seconds. It never raises.
        """
        timeout = min(self.settings.operation_timeout, _OBSERVE_TIMEOUT)
        async with self._observe_lock:
            conn = self._conn
            if self._closed or conn is None or not _alive(conn):
                return None
            try:
                if (
                    self._observer is None
                    or self._observer[0] is not conn
                    or self._observer[1].is_closed
                ):
                    channel = await asyncio.wait_for(
                        conn.channel(publisher_confirms=False), timeout
                    )
                    self._observer = (conn, channel)
                declared = await self._observer[1].declare_queue(
                    queue, passive=True, timeout=timeout
                )
            except (AMQPError, OSError, RuntimeError, TimeoutError) as exc:
                self._observer = None
                log.debug("%s: cannot look at queue %s: %s", self.name, queue, _describe(exc))
                return None
        result = declared.declaration_result
        if result.message_count is None or result.consumer_count is None:
            return None
        return result.message_count, result.consumer_count

    async def connection(self) -> AbstractConnection:
        """The open connection, (re)connecting if needed."""
        if self._closed:
            raise AmqpTransportError(f"{self.name}: closed")
        if self._conn is not None:
            if _alive(self._conn):
                return self._conn
            stale, self._conn = self._conn, None
            with contextlib.suppress(AMQPError, OSError, RuntimeError):
                await stale.close()
        self._publisher, self._exchanges, self.consumer = None, {}, None
        if not self._ever_connected:
            self._conn = await connect(self.settings, name=self.name)
            self._ever_connected = True
            return self._conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.reconnect_timeout
        delay = 0.2
        while True:
            try:
                self._conn = await connect(self.settings, name=self.name)
                log.info("%s: reconnected to %s", self.name, self.settings.address)
                return self._conn
            except AmqpConnectError as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("%s: %s; retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def exchange(self, name: str) -> AbstractExchange:
        """`name` on a channel with publisher confirms (not declared: the broker has it)."""
        async with self._lock:
            conn = await self.connection()
            if self._publisher is None or self._publisher.is_closed:
                try:
                    self._publisher = await conn.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                except _LOST as exc:
                    raise AmqpConnectError(f"{self.name}: no channel: {_describe(exc)}") from exc
                self._exchanges = {}
            if name not in self._exchanges:
                self._exchanges[name] = await self._publisher.get_exchange(name, ensure=False)
            return self._exchanges[name]

    async def publish(self, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
        """Publish and wait for the broker's confirm; retry once on a new channel."""
        timeout = self.settings.operation_timeout
        where = f"{exchange}/{routing_key}"
        for attempt in (1, 2):
            target = await self.exchange(exchange)
            try:
                await target.publish(message, routing_key, mandatory=True, timeout=timeout)
                return
            except PublishError as exc:
                raise AmqpRefused(f"{where}: no queue took the message ({_describe(exc)})") from exc
            except DeliveryError as exc:
                raise AmqpRefused(
                    f"{where}: not confirmed by the broker ({_describe(exc)})"
                ) from exc
            except _REFUSED as exc:
                raise AmqpRefused(f"{where}: {_describe(exc)}") from exc
            except _LOST as exc:
                if attempt == 2:
                    raise AmqpConnectError(f"{where}: connection lost ({_describe(exc)})") from exc
                log.warning("%s: publish failed (%s); retrying", self.name, _describe(exc))
            except TimeoutError as exc:
                raise AmqpConnectError(f"{where}: no confirm within {timeout} s") from exc

    async def consume(
        self,
        queue: str,
        prefetch: int,
        on_message: Callable[[_Consumer, AbstractIncomingMessage], Awaitable[None]],
    ) -> _Consumer:
        """The current consumer of `queue`, started on a channel of its own if needed."""
        async with self._lock:
            conn = await self.connection()
            if self.consumer is not None and self.consumer.usable:
                return self.consumer
            try:
                channel = await conn.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                consumer = _Consumer(channel)

                async def deliver(message: AbstractIncomingMessage) -> None:
                    await on_message(consumer, message)

                def closed(*_: object) -> None:
                    consumer.inbox.put_nowait(None)

                channel.close_callbacks.add(closed)
                source = await channel.get_queue(queue, ensure=False)
                await source.consume(deliver, no_ack=False)
            except _REFUSED as exc:
                raise AmqpRefused(f"cannot consume {queue}: {_describe(exc)}") from exc
            except _LOST as exc:
                raise AmqpConnectError(f"cannot consume {queue}: {_describe(exc)}") from exc
            self.consumer = consumer
            return consumer

    async def close(self) -> None:
        """Close the connection (and its channels); the link cannot be used again."""
        self._closed = True
        self._observer = None
        conn, self._conn = self._conn, None
        self._publisher, self._exchanges, self.consumer = None, {}, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(AMQPError, OSError, RuntimeError):
                await conn.close()


async def _ack(messages: list[AbstractIncomingMessage], *, multiple: bool) -> None:
    """Acknowledge `messages` (all up to the last one at once when `multiple`)."""
    if multiple:
        await messages[-1].ack(multiple=True)
    else:
        for m in messages:
            await m.ack()


class AmqpSwitchTransport:
    """The switch's side: consume `switch.inbound`, publish to `rtpswitch.outbound`.

    `switch_id` must be the common name of the switch's certificate (the broker checks
    the `user_id` of what the switch publishes against it).
    """

    def __init__(self, settings: AmqpSettings, switch_id: str, *, prefetch: int = 1024) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.switch_id = switch_id
        self.prefetch = prefetch
        self.unattributed = 0
        self._link = _Link(settings, f"switch {switch_id}")

    async def open(self) -> None:
        """Connect and start consuming (done on first use otherwise)."""
        await self._consumer()

    async def close(self) -> None:
        """Close the connection; unacknowledged deliveries go back to the queue."""
        await self._link.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _consumer(self) -> _Consumer:
        return await self._link.consume(SWITCH_QUEUE, self.prefetch, self._on_message)

    async def _on_message(self, consumer: _Consumer, message: AbstractIncomingMessage) -> None:
        if not message.user_id:
            self.unattributed += 1
            log.warning(
                "message without user_id on %s (%d bytes, message_id %s): dead-lettered to %s",
                SWITCH_QUEUE,
                len(message.body),
                message.message_id,
                UNATTRIBUTED_QUEUE,
            )
            with contextlib.suppress(AMQPError, RuntimeError):
                await message.reject(requeue=False)
            return
        assert message.delivery_tag is not None  # consumed, not got
        consumer.unacked[message.delivery_tag] = message
        consumer.inbox.put_nowait(message)

    async def receive_batch(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to `max_items` deliveries; waits at most `timeout` seconds for the first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            consumer = await self._consumer()
            inbox = consumer.inbox
            if inbox.empty():
                try:
                    first = await asyncio.wait_for(inbox.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return []
            else:
                first = inbox.get_nowait()
            taken = [first]
            while len(taken) < max_items and not inbox.empty():
                taken.append(inbox.get_nowait())
            messages = [m for m in taken if m is not None]
            if len(messages) < len(taken) or not consumer.usable:
                # The channel closed: what it delivered comes again on the next one.
                log.warning("switch: consumer channel closed; consuming again")
                continue
            out: list[Delivery] = []
            for m in messages:
                assert m.user_id and m.delivery_tag is not None
                d = Delivery(sender=m.user_id, data=m.body, tag=m.delivery_tag)
                consumer.handed[d.tag] = d
                out.append(d)
            return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge deliveries whose effects are committed (stale ones are skipped)."""
        consumer = self._link.consumer
        if not deliveries:
            return
        done: list[AbstractIncomingMessage] = []
        if consumer is not None:
            for d in deliveries:
                # Identity, not the tag alone: on a new channel tags start again at 1.
                if consumer.handed.get(d.tag) is d:
                    del consumer.handed[d.tag]
                    done.append(consumer.unacked.pop(d.tag))
        if len(done) < len(deliveries):
            log.info(
                "switch: %d deliveries of a closed channel not acknowledged (they come again)",
                len(deliveries) - len(done),
            )
        if consumer is None or not done or not consumer.usable:
            return
        done.sort(key=lambda m: m.delivery_tag or 0)
        top = done[-1].delivery_tag or 0
        # One basic.ack for all when nothing below the highest tag stays unacknowledged.
        lowest = next(iter(consumer.unacked), None)
        multiple = len(done) > 1 and (lowest is None or lowest > top)
        try:
            await _ack(done, multiple=multiple)
        except (AMQPError, RuntimeError, ConnectionError) as exc:
            log.warning("switch: ack failed (%s); the broker will redeliver", _describe(exc))

    async def send(self, participant: str, data: bytes) -> None:
        """Publish `data` to `participant`'s queue and wait for the broker's confirm."""
        await self._link.publish(OUTBOUND_EXCHANGE, participant, _persistent(data, self.switch_id))

    async def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish all of `messages` at once, then wait for all the broker's confirms.

        Waiting for each confirm in turn would cost one round trip per message.
        """
        await asyncio.gather(*(self.send(participant, data) for participant, data in messages))

    async def queue_depth(self) -> int | None:
        """Messages waiting for the switch; None when not connected to the broker.

        Those ready on `switch.inbound` plus those the broker delivered to this process
        and `receive_batch` has not yet handed to the engine.
        """
        counts = await self._link.queue_counts(SWITCH_QUEUE)
        if counts is None:
            return None
        consumer = self._link.consumer
        buffered = consumer.inbox.qsize() if consumer is not None and consumer.usable else 0
        return counts[0] + buffered

    async def connected(self, participants: Collection[str]) -> dict[str, bool]:
        """Whether each participant has a consumer on its queue `participant.<ID>`.

        False for a participant without a queue, and for all of them when the switch is
        not connected to the broker or it does not answer in time.
        """
        out = dict.fromkeys(participants, False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._link.settings.operation_timeout
        for participant in out:
            if not self._link.alive or loop.time() > deadline:
                break
            counts = await self._link.queue_counts(participant_queue(participant))
            out[participant] = counts is not None and counts[1] > 0
        return out


class AmqpParticipantChannel:
    """A bank's side: publish to `rtpswitch.inbound`, consume `participant.<ID>`.

    `participant` must be the common name of the certificate in `settings`: it is the
    `user_id` of every message sent, which the broker checks.
    """

    def __init__(self, settings: AmqpSettings, participant: str, *, prefetch: int = 64) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.participant = participant
        self.prefetch = prefetch
        self._link = _Link(settings, f"participant {participant}")
        self._last: AbstractIncomingMessage | None = None

    async def open(self) -> None:
        """Connect (done on first use otherwise)."""
        await self._link.connection()

    async def close(self) -> None:
        """Acknowledge the message last returned, then close the connection."""
        await self._ack_last()
        await self._link.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, data: bytes) -> None:
        """Send bytes to the switch, as this participant; returns once the broker has them."""
        message = _persistent(data, self.participant)
        await self._link.publish(INBOUND_EXCHANGE, INBOUND_ROUTING_KEY, message)

    async def _on_message(self, consumer: _Consumer, message: AbstractIncomingMessage) -> None:
        consumer.inbox.put_nowait(message)

    async def _ack_last(self) -> None:
        last, self._last = self._last, None
        if last is None or last.channel.is_closed:
            return
        try:
            await last.ack()
        except (AMQPError, RuntimeError, ConnectionError) as exc:
            log.warning("%s: ack failed (%s); it will come again", self.participant, exc)

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message from the switch, or None after `timeout` seconds.

        Acknowledges the message returned by the previous call first.
        """
        await self._ack_last()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        queue = participant_queue(self.participant)
        while True:
            consumer = await self._link.consume(queue, self.prefetch, self._on_message)
            try:
                if deadline is None:
                    message = await consumer.inbox.get()
                else:
                    remaining = max(0.0, deadline - loop.time())
                    message = await asyncio.wait_for(consumer.inbox.get(), remaining)
            except TimeoutError:
                return None
            if message is None or not consumer.usable:
                log.warning("%s: consumer channel closed; consuming again", self.participant)
                continue
            self._last = message
            return message.body
