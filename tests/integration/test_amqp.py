"""The AMQP transport against the project's real RabbitMQ node (mutual TLS, EXTERNAL).

The module fixture runs the broker part of the bring-up once (PKI in `var/pki`, node in
`var/rabbitmq`; idempotent, so after `scripts/bringup` it only checks). Every test
empties the queues it reads first and closes its connections, so tests do not see each
other's messages. RabbitMQ is a required service: when the node cannot be brought up
the tests fail with the bring-up's reason; they are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPConnectionError, ChannelAccessRefused
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from switch.deploy.bringup import Plan, provision_broker
from switch.deploy.broker import (
    BrokerError,
    BrokerNode,
    ctl,
    cut_off,
    ensure_definitions,
    node_status,
)
from switch.security.pki import SchemeCA
from switch.transport.amqp import (
    INBOUND_EXCHANGE,
    INBOUND_ROUTING_KEY,
    OUTBOUND_EXCHANGE,
    SWITCH_QUEUE,
    UNATTRIBUTED_QUEUE,
    AmqpConnectError,
    AmqpParticipantChannel,
    AmqpRefused,
    AmqpSettings,
    AmqpSwitchTransport,
    connect,
    participant_queue,
    tls_context,
)
from switch.transport.base import Delivery

REPO = Path(__file__).resolve().parents[2]
PKI = REPO / "var" / "pki"
BROKER_DIR = REPO / "var" / "rabbitmq"
A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
REVOKED = "RVKDUS33XXX"
"""A participant made only to be revoked (never in the demo config)."""


@dataclass(frozen=True)
class Broker:
    plan: Plan
    node: BrokerNode

    def settings(self, who: str) -> AmqpSettings:
        return AmqpSettings.from_pki(PKI, who, host=self.node.host, port=self.node.port)


@pytest.fixture(scope="module")
def broker() -> Broker:
    """The project's node, running and provisioned for the demo participants."""
    try:
        who, node, _ = provision_broker(pki_dir=PKI, broker_dir=BROKER_DIR)
    except BrokerError as exc:
        pytest.fail(f"cannot bring up the RabbitMQ node: {exc}", pytrace=False)
    assert {A, B, C} <= set(who.participants)
    return Broker(who, node)


def _payload(label: str) -> bytes:
    return f"<Test label='{label}' nonce='{uuid.uuid4()}'/>".encode()


async def _purge(settings: AmqpSettings, *queues: str) -> None:
    conn = await connect(settings, name="test purge")
    try:
        channel = await conn.channel()
        for name in queues:
            await (await channel.get_queue(name, ensure=False)).purge()
    finally:
        await conn.close()


async def _receive_all(switch: AmqpSwitchTransport, n: int, timeout: float = 5.0) -> list[Delivery]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out: list[Delivery] = []
    while len(out) < n and loop.time() < deadline:
        out += await switch.receive_batch(n - len(out), deadline - loop.time())
    return out


# --- the happy paths ------------------------------------------------------------------------


async def test_participant_sends_switch_receives_with_broker_validated_sender(
    broker: Broker,
) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE)
    sent = {A: _payload("a"), B: _payload("b")}
    async with (
        AmqpParticipantChannel(broker.settings(A), A) as bank_a,
        AmqpParticipantChannel(broker.settings(B), B) as bank_b,
    ):
        await bank_a.send(sent[A])
        await bank_b.send(sent[B])
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        got = await _receive_all(switch, 2)
        assert {d.sender: d.data for d in got} == sent
        assert all(d.tag > 0 for d in got)
        await switch.ack(got)
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        assert await switch.receive_batch(10, 0.3) == []  # acknowledged: gone


async def test_switch_sends_only_that_participant_receives(broker: Broker) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(A), participant_queue(A))
    await _purge(broker.settings(B), participant_queue(B))
    data = _payload("to-b")
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        await switch.send(B, data)
        with pytest.raises(AmqpRefused, match="no queue"):
            await switch.send("NOSUCHBANK", data)  # unroutable: an error, never a silent loss
        await switch.send(B, data + b" ")  # the publishing channel survives the refusal
    async with (
        AmqpParticipantChannel(broker.settings(A), A) as bank_a,
        AmqpParticipantChannel(broker.settings(B), B) as bank_b,
    ):
        assert await bank_b.receive(timeout=5) == data
        assert await bank_b.receive(timeout=5) == data + b" "
        assert await bank_a.receive(timeout=0.5) is None
        assert await bank_b.receive(timeout=0.3) is None


async def test_bank_acknowledges_on_next_receive_so_a_crashed_bank_gets_it_again(
    broker: Broker,
) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(C), participant_queue(C))
    first, second = _payload("1"), _payload("2")
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        await switch.send(C, first)
        await switch.send(C, second)
    bank = AmqpParticipantChannel(broker.settings(C), C)
    assert await bank.receive(timeout=5) == first
    assert await bank.receive(timeout=5) == second  # acknowledges `first`
    await bank._link.close()  # dies holding `second`, unacknowledged
    async with AmqpParticipantChannel(broker.settings(C), C) as again:
        assert await again.receive(timeout=5) == second
    async with AmqpParticipantChannel(broker.settings(C), C) as after_close:
        assert await after_close.receive(timeout=0.3) is None  # close acknowledged it


# --- crash and redelivery -------------------------------------------------------------------

_CRASHING_SWITCH = """
import asyncio, sys
from pathlib import Path
from switch.transport.amqp import AmqpSettings, AmqpSwitchTransport

async def main() -> None:
    pki, switch_id, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    switch = AmqpSwitchTransport(AmqpSettings.from_pki(pki, switch_id), switch_id)
    got = []
    while len(got) < n:
        got += await switch.receive_batch(n - len(got), 5.0)
    await switch.ack(got[:1])  # the first one is committed; the rest are not
    print("received", len(got), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def crashing_switch(broker: Broker) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


async def test_unacknowledged_deliveries_come_again_after_the_switch_crashes(
    broker: Broker, crashing_switch: list[subprocess.Popen[str]]
) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE)
    sent = [_payload(f"m{i}") for i in range(4)]
    async with AmqpParticipantChannel(broker.settings(A), A) as bank:
        for data in sent:
            await bank.send(data)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SWITCH, str(PKI), switch_id, str(len(sent))],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    crashing_switch.append(proc)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    assert line.strip() == f"received {len(sent)}"
    os.kill(proc.pid, signal.SIGKILL)  # no AMQP close: the broker sees the socket die
    await asyncio.to_thread(proc.wait, 10)
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        again = await _receive_all(switch, len(sent) - 1, timeout=10)
        assert sorted(d.data for d in again) == sorted(sent[1:])
        assert {d.sender for d in again} == {A}
        await switch.ack(again)
        assert await switch.receive_batch(10, 0.3) == []


async def test_deliveries_of_a_dropped_connection_are_not_acknowledged_by_tag(
    broker: Broker,
) -> None:
    """After a reconnect tags restart at 1: an old delivery must not ack a new one."""
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE)
    sent = [_payload(f"r{i}") for i in range(3)]
    async with AmqpParticipantChannel(broker.settings(A), A) as bank:
        for data in sent:
            await bank.send(data)
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        old = await _receive_all(switch, 3)
        assert [d.tag for d in old] == [1, 2, 3]
        # The broker drops the connection (as on a broker restart or a network cut).
        await asyncio.to_thread(ctl, broker.node, "close_all_user_connections", switch_id, "test")
        new = await _receive_all(switch, 3)  # reconnects; the broker delivers them again
        assert sorted(d.data for d in new) == sorted(sent)
        assert sorted(d.tag for d in new) == [1, 2, 3]
        await switch.ack(old)  # stale: skipped, even though the tags collide
        await switch.ack(new[:1])
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        rest = await _receive_all(switch, 2)
        assert sorted(d.data for d in rest) == sorted(d.data for d in new[1:])
        await switch.ack(rest)


async def test_interleaved_acks_acknowledge_exactly_what_was_committed(broker: Broker) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE)
    sent = [_payload(f"i{i}") for i in range(6)]
    async with AmqpParticipantChannel(broker.settings(B), B) as bank:
        for data in sent:
            await bank.send(data)
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        got = await _receive_all(switch, 6)
        await switch.ack(got[:2])  # nothing below: one ack for both
        await switch.ack([got[3]])
        await switch.ack([got[5]])  # got[2] and got[4] are still outstanding below it
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        rest = await _receive_all(switch, 2)
        assert sorted(d.data for d in rest) == sorted([got[2].data, got[4].data])
        await switch.ack(rest)
        assert await switch.receive_batch(10, 0.3) == []


# --- what the broker refuses ----------------------------------------------------------------


async def test_message_without_user_id_is_dead_lettered_not_handed_to_the_engine(
    broker: Broker,
) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE, UNATTRIBUTED_QUEUE)
    anonymous, signed = _payload("anonymous"), _payload("named")
    conn = await connect(broker.settings(A), name="test anonymous")
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(INBOUND_EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(anonymous), INBOUND_ROUTING_KEY)
    finally:
        await conn.close()
    async with AmqpParticipantChannel(broker.settings(A), A) as bank:
        await bank.send(signed)
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        got = await _receive_all(switch, 1)
        assert [(d.sender, d.data) for d in got] == [(A, signed)]
        assert switch.unattributed == 1  # sent before `signed`, so already rejected
        assert await switch.receive_batch(10, 0.2) == []
        await switch.ack(got)
    conn = await connect(broker.settings(switch_id), name="test operator")
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(UNATTRIBUTED_QUEUE, ensure=False)
        for _ in range(50):  # the reject is asynchronous
            dead = await queue.get(timeout=5, fail=False)
            if dead is not None:
                break
            await asyncio.sleep(0.1)
        assert dead is not None and dead.body == anonymous
        await dead.ack()
    finally:
        await conn.close()


async def test_publishing_with_another_banks_user_id_is_refused_by_the_broker(
    broker: Broker,
) -> None:
    switch_id = broker.plan.switch_id
    await _purge(broker.settings(switch_id), SWITCH_QUEUE)
    liar = AmqpParticipantChannel(broker.settings(A), B)  # A's certificate, B's name
    try:
        with pytest.raises(AmqpRefused, match="PRECONDITION_FAILED"):
            await liar.send(_payload("forged"))
    finally:
        await liar.close()
    async with AmqpSwitchTransport(broker.settings(switch_id), switch_id) as switch:
        assert await switch.receive_batch(10, 0.5) == []


async def test_a_bank_cannot_read_another_banks_queue_nor_write_as_the_switch(
    broker: Broker,
) -> None:
    snoop = AmqpParticipantChannel(broker.settings(A), B)
    try:
        with pytest.raises(AmqpRefused, match="ACCESS_REFUSED"):
            await snoop.receive(timeout=1)
    finally:
        await snoop.close()
    conn = await connect(broker.settings(A), name="test forger")
    try:
        channel = await conn.channel(publisher_confirms=True)
        with pytest.raises(ChannelAccessRefused):
            queue = await channel.get_queue(participant_queue(B), ensure=False)
            await queue.consume(_ignore)
        channel = await conn.channel(publisher_confirms=True)
        outbound = await channel.get_exchange(OUTBOUND_EXCHANGE, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await outbound.publish(aio_pika.Message(b"x", user_id=A), B)
        channel = await conn.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue("mine", durable=True)  # no configure right
    finally:
        await conn.close()


async def _ignore(message: AbstractIncomingMessage) -> None:
    pass


def _impostor_credentials(directory: Path, cn: str) -> tuple[Path, Path]:
    """A certificate for `cn` from a CA that is not the scheme's."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RTP Switch Scheme CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "impostor.crt", directory / "impostor.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _connect_tls12(settings: AmqpSettings) -> AbstractConnection:
    """Connect over TLS 1.2, where a refused client certificate is always told by an alert
    (TLS 1.3 clients may see a reset instead, depending on timing)."""
    context = tls_context(settings.ca_cert, settings.cert, settings.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return await aio_pika.connect(settings.url("test tls1.2"), ssl_context=context, timeout=5)


async def test_a_certificate_from_another_ca_cannot_connect(broker: Broker, tmp_path: Path) -> None:
    cert, key = _impostor_credentials(tmp_path, A)
    real = broker.settings(A)
    impostor = replace(real, cert=cert, key=key)
    with pytest.raises(AmqpConnectError):
        await connect(impostor, name="impostor")
    with pytest.raises(AMQPConnectionError, match=r"UNKNOWN_CA|BAD_CERTIFICATE"):
        await _connect_tls12(impostor)
    await (await _connect_tls12(real)).close()  # the same way in, with the real certificate


async def test_a_client_without_a_certificate_cannot_connect(broker: Broker) -> None:
    context = ssl.create_default_context(cafile=str(broker.settings(A).ca_cert))
    # TLS 1.3 reports the refusal as an alert or as a reset, depending on timing.
    with pytest.raises(AMQPConnectionError):
        await aio_pika.connect(
            f"amqps://{broker.node.host}:{broker.node.port}/{broker.node.vhost}?auth=external",
            ssl_context=context,
            timeout=5,
        )


def test_the_node_has_no_plain_listener(broker: Broker) -> None:
    status = node_status(broker.node)
    assert status is not None
    protocols = {(x["protocol"], x["port"]) for x in status["listeners"]}
    assert ("amqp/ssl", broker.node.port) in protocols
    assert not [p for p in protocols if p[0] == "amqp"]
    # Plain AMQP spoken to the TLS port gets no AMQP answer.
    with socket.create_connection((broker.node.host, broker.node.port), timeout=5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        s.settimeout(5)
        try:
            answer = s.recv(64)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"AMQP") and b"\x0a\x00\x0a" not in answer


async def test_a_revoked_certificate_is_refused_and_its_connections_closed(
    broker: Broker,
) -> None:
    node, switch_id = broker.node, broker.plan.switch_id
    ca = SchemeCA.init(PKI)
    ca.ensure(REVOKED)
    ensure_definitions(node, switch_id, [*broker.plan.participants, REVOKED])
    settings = broker.settings(REVOKED)
    cut = False
    try:
        conn = await connect(settings, name="test revoked")
        try:
            await (await _connect_tls12(settings)).close()
            ca.revoke(REVOKED, reason="keyCompromise")
            # The CRL is read at every handshake: refused at once, no restart.
            with pytest.raises(AmqpConnectError):
                await connect(settings, name="test revoked again")
            with pytest.raises(AMQPConnectionError, match=r"CERTIFICATE_REVOKED"):
                await _connect_tls12(settings)
            # A connection opened before the revocation lasts until the bank is cut off.
            assert conn.connected.is_set()
            assert cut_off(node, REVOKED) == [f"deleted user {REVOKED} (revoked)"]
            cut = True
            for _ in range(50):
                if not conn.connected.is_set():
                    break
                await asyncio.sleep(0.1)
            assert not conn.connected.is_set()
        finally:
            await conn.close()
    finally:
        if not cut:
            cut_off(node, REVOKED)


# --- the bring-up itself --------------------------------------------------------------------


def test_broker_bringup_again_changes_nothing(broker: Broker) -> None:
    _, _, changes = provision_broker(pki_dir=PKI, broker_dir=BROKER_DIR)
    assert changes == []


def test_bringup_command_twice_second_run_changes_nothing(broker: Broker) -> None:
    cmd = [sys.executable, "-m", "switch.deploy.bringup", "--pki", str(PKI)]
    cmd += ["--broker-dir", str(BROKER_DIR)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1].startswith("bring-up: nothing to do"), second.stdout


def test_bringup_fails_clearly_when_it_cannot_do_a_step(tmp_path: Path) -> None:
    bad = tmp_path / "switch.toml"
    bad.write_text("[scheme]\ncurrency = 'USD'\n")
    cmd = [sys.executable, "-m", "switch.deploy.bringup", "--config", str(bad)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("bringup: error: config: ")
