"""In-process transport: asyncio queues standing in for the participants' message queues.

The embedded default: the switch and simulated banks run in one process with no broker.
It keeps the real transport's contract: a participant can only send to the switch and
read its own queue, and the switch learns the sender from the channel, never from the
message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

from switch.transport.base import Delivery


class LocalNetwork:
    """The switch inbox plus one queue per connected participant."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._connected: set[str] = set()
        self.switch = LocalSwitchTransport(self)

    def connect(self, participant: str) -> LocalChannel:
        """A channel for `participant` (its queue is created on first connection)."""
        self._queues.setdefault(participant, asyncio.Queue())
        self._connected.add(participant)
        return LocalChannel(self, participant)

    def disconnect(self, participant: str) -> None:
        """`participant` no longer reads its queue (what the switch sends waits there)."""
        self._connected.discard(participant)

    def is_connected(self, participant: str) -> bool:
        """Whether `participant` has a channel (connected and not disconnected since)."""
        return participant in self._connected

    def queue(self, participant: str) -> asyncio.Queue[bytes]:
        """The queue of `participant`, created if needed."""
        return self._queues.setdefault(participant, asyncio.Queue())

    @property
    def inbox(self) -> asyncio.Queue[Delivery]:
        """Messages on their way to the switch."""
        return self._inbox


class LocalSwitchTransport:
    """The switch's side of a LocalNetwork."""

    def __init__(self, network: LocalNetwork) -> None:
        self._net = network

    async def receive_batch(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to `max_items` deliveries; waits at most `timeout` seconds for the first."""
        inbox = self._net.inbox
        if inbox.empty():
            try:
                first = await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                return []
            out = [first]
        else:
            out = []
        while len(out) < max_items and not inbox.empty():
            out.append(inbox.get_nowait())
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to acknowledge in process: a crash loses the senders too."""

    async def send(self, participant: str, data: bytes) -> None:
        """Put `data` on `participant`'s queue."""
        self._net.queue(participant).put_nowait(data)

    async def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Put each message on its participant's queue, in order."""
        queue = self._net.queue
        for participant, data in messages:
            queue(participant).put_nowait(data)

    async def queue_depth(self) -> int | None:
        """Messages sent to the switch and not yet received by it."""
        return self._net.inbox.qsize()

    async def connected(self, participants: Collection[str]) -> dict[str, bool]:
        """Whether each of `participants` has a channel on this network."""
        return {p: self._net.is_connected(p) for p in participants}


class LocalChannel:
    """One participant's side of a LocalNetwork."""

    def __init__(self, network: LocalNetwork, participant: str) -> None:
        self._net = network
        self.participant = participant
        self._queue = network.queue(participant)

    async def send(self, data: bytes) -> None:
        """Send bytes to the switch, as this participant."""
        self._net.inbox.put_nowait(Delivery(sender=self.participant, data=data))

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message from the switch, or None after `timeout` seconds."""
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
