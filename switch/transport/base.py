"""The participant transport, as the switch and as a bank see it.

Theory: a transport moves opaque bytes. Inbound, it tells the switch who sent them (the
participant its channel authenticated: mTLS certificate on AMQP, the connection itself
in-process); the switch acknowledges a batch of deliveries only after their effects are
committed, so a crash before the commit makes the transport deliver them again.
Outbound, it hands bytes to one participant's queue. Senders and receivers
de-duplicate by BizMsgIdr, which is what makes re-sending after a crash safe.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Delivery:
    """Bytes a participant sent to the switch, with the participant the channel authenticated."""

    sender: str
    data: bytes
    tag: int = 0
    batch: tuple[str, int] | None = None
    """(file id, transaction index) for a transaction of a batch file: handed to the engine
    by the batch channel, not by this transport (never acknowledged to it)."""


class SwitchTransport(Protocol):
    """The switch's side: receive batches from all participants, send to one."""

    async def receive_batch(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to `max_items` deliveries; waits at most `timeout` seconds for the first."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge deliveries whose effects are committed."""
        ...

    async def send(self, participant: str, data: bytes) -> None:
        """Hand `data` to `participant`'s queue."""
        ...

    async def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Hand each (participant, data) of `messages` over, in order; return when all are."""
        ...


@runtime_checkable
class Observable(Protocol):
    """What a switch transport tells the operator (read at scrape time, never on the hot path).

    Both answer from the transport's own view and never raise: what cannot be found out
    is None (depth) or False (a participant not known to be connected).
    """

    async def queue_depth(self) -> int | None:
        """Messages waiting for the switch (sent to it, not yet handed to the engine)."""
        ...

    async def connected(self, participants: Collection[str]) -> dict[str, bool]:
        """For each of `participants`: whether it is connected to receive from the switch.

        A bank is connected when it has a consumer on its queue (AMQP) or a channel
        (in process).
        """
        ...


class ParticipantChannel(Protocol):
    """A bank's side: send to the switch, receive from its own queue."""

    participant: str

    async def send(self, data: bytes) -> None:
        """Send bytes to the switch."""
        ...

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message from the switch, or None after `timeout` seconds."""
        ...
