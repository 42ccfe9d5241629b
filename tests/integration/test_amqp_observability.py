"""Transport observability against the project's real RabbitMQ node (mutual TLS, EXTERNAL).

The switch's side tells how many messages wait for it on `switch.inbound` and which
banks have a consumer on their queue, by passive declares under the switch's own
certificate (it may not configure anything on the broker). The module fixture runs the
broker part of the bring-up once, as tests/integration/test_amqp.py does; every test
empties the queues it counts first and closes its connections. RabbitMQ is a required
service: when the node cannot be brought up the tests fail; they are never skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from switch.deploy.bringup import Plan, provision_broker
from switch.deploy.broker import BrokerError, BrokerNode, ctl
from switch.transport import Observable
from switch.transport.amqp import (
    SWITCH_QUEUE,
    AmqpParticipantChannel,
    AmqpSettings,
    AmqpSwitchTransport,
    connect,
    participant_queue,
)

REPO = Path(__file__).resolve().parents[2]
PKI = REPO / "var" / "pki"
BROKER_DIR = REPO / "var" / "rabbitmq"
A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
NOBODY = "NOSUCHBANKXX"
"""A participant without a queue on the broker."""

T = TypeVar("T")


@dataclass(frozen=True)
class Broker:
    plan: Plan
    node: BrokerNode

    def settings(self, who: str) -> AmqpSettings:
        return AmqpSettings.from_pki(PKI, who, host=self.node.host, port=self.node.port)

    def switch(self) -> AmqpSwitchTransport:
        switch_id = self.plan.switch_id
        return AmqpSwitchTransport(self.settings(switch_id), switch_id)


@pytest.fixture(scope="module")
def broker() -> Broker:
    """The project's node, running and provisioned for the demo participants."""
    try:
        who, node, _ = provision_broker(pki_dir=PKI, broker_dir=BROKER_DIR)
    except BrokerError as exc:
        pytest.fail(f"cannot bring up the RabbitMQ node: {exc}", pytrace=False)
    assert {A, B, C} <= set(who.participants)
    return Broker(who, node)


async def _purge(settings: AmqpSettings, *queues: str) -> None:
    conn = await connect(settings, name="test purge")
    try:
        channel = await conn.channel()
        for name in queues:
            await (await channel.get_queue(name, ensure=False)).purge()
    finally:
        await conn.close()


async def _eventually(ask: Callable[[], Awaitable[T]], wanted: object, seconds: float = 5.0) -> T:
    """`ask()` until it answers `wanted` (the broker's counts settle a moment after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        got = await ask()
        if got == wanted or loop.time() > deadline:
            return got
        await asyncio.sleep(0.05)


def _payload() -> bytes:
    return f"<Test nonce='{uuid.uuid4()}'/>".encode()


async def test_a_switch_not_connected_answers_unknown_and_nobody_connected(broker: Broker) -> None:
    switch = broker.switch()
    assert isinstance(switch, Observable)
    assert await switch.queue_depth() is None  # does not connect to find out
    assert await switch.connected([A, B]) == {A: False, B: False}
    await switch.open()
    assert await switch.queue_depth() is not None
    await switch.close()
    assert await switch.queue_depth() is None
    assert await switch.connected([A]) == {A: False}


async def test_queue_depth_counts_what_waits_on_the_broker_and_in_the_consumer(
    broker: Broker,
) -> None:
    await _purge(broker.settings(broker.plan.switch_id), SWITCH_QUEUE)
    await _purge(broker.settings(B), participant_queue(B))
    switch = broker.switch()
    try:
        # Connected (it published) but not consuming: everything waits on the broker.
        await switch.send(B, _payload())
        assert await switch.queue_depth() == 0
        async with AmqpParticipantChannel(broker.settings(A), A) as bank:
            for _ in range(3):
                await bank.send(_payload())
        assert await _eventually(switch.queue_depth, 3) == 3
        # Consuming: the broker hands them over; they still wait for the engine.
        await switch.open()
        assert await _eventually(switch.queue_depth, 3) == 3
        got = await switch.receive_batch(10, 5.0)
        assert len(got) == 3
        assert await switch.queue_depth() == 0
        await switch.ack(got)
        assert await switch.queue_depth() == 0
    finally:
        await switch.close()
    await _purge(broker.settings(B), participant_queue(B))


async def test_connected_is_a_consumer_on_the_banks_queue(broker: Broker) -> None:
    await _purge(broker.settings(A), participant_queue(A))
    switch = broker.switch()
    await switch.open()
    try:
        everyone = [NOBODY, A, B, C]
        assert await switch.connected(everyone) == dict.fromkeys(everyone, False)
        bank = AmqpParticipantChannel(broker.settings(A), A)
        try:
            assert await bank.receive(timeout=0.1) is None  # now consuming its queue
            # A refused declare (no such queue) first: the next answers still come.
            want = {NOBODY: False, A: True, B: False, C: False}
            assert await _eventually(lambda: switch.connected(everyone), want) == want
        finally:
            await bank.close()
        gone = dict.fromkeys(everyone, False)
        assert await _eventually(lambda: switch.connected(everyone), gone) == gone
        assert await switch.queue_depth() is not None  # the switch's own link is unharmed
    finally:
        await switch.close()


async def test_a_dropped_connection_answers_unknown_then_recovers(broker: Broker) -> None:
    switch_id = broker.plan.switch_id
    switch = broker.switch()
    await switch.open()
    bank = AmqpParticipantChannel(broker.settings(B), B)
    try:
        await _purge(broker.settings(switch_id), SWITCH_QUEUE)
        await _purge(broker.settings(B), participant_queue(B))
        assert await bank.receive(timeout=0.1) is None
        assert await _eventually(lambda: switch.connected([B]), {B: True}) == {B: True}
        # The broker drops the switch's connection (as on a broker restart).
        await asyncio.to_thread(ctl, broker.node, "close_all_user_connections", switch_id, "test")
        assert await _eventually(switch.queue_depth, None) is None
        assert await switch.connected([B]) == {B: False}  # unknown, never raised
        assert await switch.receive_batch(1, 0.2) == []  # the clearing path reconnects
        assert await _eventually(switch.queue_depth, 0) == 0
        assert await switch.connected([B]) == {B: True}
    finally:
        await bank.close()
        await switch.close()
