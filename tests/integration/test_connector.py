"""The bank's connector, its command line and `rtpswitch simulate`, on the real broker.

The module fixture brings up the project's RabbitMQ node as `test_amqp` does (PKI in
`var/pki`, idempotent). The tests play the switch with `AmqpSwitchTransport` and the
switch's own signing key. Each test empties the bank queues it reads first; on the
switch's queue, shared with whoever else uses the broker, a test takes only the messages
it made (by their ids), acknowledges those, and leaves the rest to come back.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from participants.connector import BankConnector, connect
from participants.messages import SWITCH, credit_transfer, envelope
from switch.cli import main
from switch.deploy.bringup import Plan, provision_broker
from switch.deploy.broker import BrokerError, BrokerNode
from switch.iso20022 import build, views
from switch.iso20022.parse import parse
from switch.iso20022.registry import MessageType
from switch.iso20022.views import Agent
from switch.security.pki import SchemeCA, TrustStore, load_credentials
from switch.security.xmldsig import SignatureRejected, Signer, Verifier
from switch.settings import Settings, load_settings
from switch.transport.amqp import (
    AmqpSettings,
    AmqpSwitchTransport,
    participant_queue,
)
from switch.transport.amqp import (
    connect as amqp_connect,
)
from switch.transport.base import Delivery
from switch.transport.local import LocalNetwork

REPO = Path(__file__).resolve().parents[2]
PKI = REPO / "var" / "pki"
BROKER_DIR = REPO / "var" / "rabbitmq"
A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
SWITCH_ID = "SWCHUS33XXX"


@dataclass(frozen=True)
class Net:
    plan: Plan
    node: BrokerNode
    config: Path
    settings: Settings

    def amqp(self, who: str) -> AmqpSettings:
        return AmqpSettings.from_pki(PKI, who, host=self.node.host, port=self.node.port)

    def switch(self) -> AmqpSwitchTransport:
        return AmqpSwitchTransport(self.amqp(self.plan.switch_id), self.plan.switch_id)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    """The project's broker, and a switch config naming it and the PKI by absolute paths."""
    try:
        who, node, _ = provision_broker(pki_dir=PKI, broker_dir=BROKER_DIR)
    except BrokerError as exc:
        pytest.fail(f"cannot bring up the RabbitMQ node: {exc}", pytrace=False)
    assert who.switch_id == SWITCH_ID and {A, B, C} <= set(who.participants)
    text = (REPO / "config" / "switch.toml").read_text()
    service = {
        "pki_dir": str(PKI),
        "participants": str(REPO / "config" / "demo.toml"),
        "amqp_host": node.host,
        "amqp_port": node.port,
    }
    for key, value in service.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text)
        assert n == 1, key
    config = tmp_path_factory.mktemp("connector") / "switch.toml"
    config.write_text(text)
    return Net(who, node, config, load_settings(config))


@pytest.fixture(scope="module")
def switch_signer() -> Signer:
    creds = load_credentials(PKI, SWITCH_ID)
    return Signer.from_files(creds.signing_key, creds.signing_cert)


def _signer_of(who: str) -> Signer:
    creds = load_credentials(PKI, who)
    return Signer.from_files(creds.signing_key, creds.signing_cert)


# --- messages -------------------------------------------------------------------------------


def _id() -> str:
    return "T" + uuid.uuid4().hex[:20].upper()


def _payment(
    sender: str, receiver: str, debtor: str, creditor: str, account: str, msg_id: str
) -> bytes:
    """A one-transaction pacs.008 from `debtor` to `creditor`, enveloped sender -> receiver."""
    now = datetime.now(UTC)
    doc = credit_transfer(
        msg_id=msg_id,
        created=now,
        uetr=str(uuid.uuid4()),
        end_to_end_id="E" + msg_id,
        tx_id="X" + msg_id,
        amount=Decimal("12.34"),
        debtor_agent=Agent(bicfi=debtor),
        creditor_agent=Agent(bicfi=creditor),
        debtor_name="Alice Example",
        debtor_account="000000000001",
        creditor_name="Bob Example",
        creditor_account=account,
        settlement_date=now.date(),
    )
    return envelope(
        Agent(bicfi=sender), Agent(bicfi=receiver), MessageType.PACS_008, msg_id, doc, now
    )


def _status(receiver: str, msg_id: str, original: str, uetr: str | None, status: str) -> bytes:
    """A pacs.002 from the switch to `receiver` on the payment `original`."""
    now = datetime.now(UTC)
    doc = build.status_report(
        msg_id=msg_id,
        created=now,
        status=status,
        original_msg_id=original,
        original_uetr=uetr,
        instructing_agent=SWITCH,
        instructed_agent=Agent(bicfi=receiver),
    )
    return envelope(SWITCH, Agent(bicfi=receiver), MessageType.PACS_002, msg_id, doc, now)


def _forward(creditor: str, account: str, msg_id: str) -> bytes:
    """A pacs.008 from bank A as the switch forwards it to `creditor` (unsigned)."""
    return _payment(SWITCH_ID, creditor, A, creditor, account, msg_id)


# --- the switch's side ----------------------------------------------------------------------


async def _purge(settings: AmqpSettings, *queues: str) -> None:
    conn = await amqp_connect(settings, name="test purge")
    try:
        channel = await conn.channel()
        for name in queues:
            await (await channel.get_queue(name, ensure=False)).purge()
    finally:
        await conn.close()


async def _take(
    switch: AmqpSwitchTransport,
    wanted: Callable[[Delivery], bool],
    n: int = 1,
    timeout: float = 8.0,
) -> list[Delivery]:
    """The first `n` deliveries on the switch's queue that are `wanted`, acknowledged; the
    others are left unacknowledged (they go back to the queue when `switch` closes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Delivery] = []
    while len(found) < n and loop.time() < deadline:
        batch = await switch.receive_batch(64, deadline - loop.time())
        found += [d for d in batch if wanted(d)]
    await switch.ack(found)
    assert len(found) == n, f"{len(found)} of {n} expected messages reached the switch"
    return found


def _from(sender: str, *needles: str) -> Callable[[Delivery], bool]:
    return lambda d: d.sender == sender and any(x.encode() in d.data for x in needles)


def _document(data: bytes) -> views.StatusReport | views.CreditTransfer:
    msg = parse(data)
    assert msg.document is not None
    if msg.mtype is MessageType.PACS_002:
        return views.status_report(msg.document)
    assert msg.mtype is MessageType.PACS_008
    return views.credit_transfer(msg.document)


def _c14n_document(data: bytes) -> bytes:
    msg = parse(data)
    assert msg.document is not None
    return etree.tostring(msg.document, method="c14n", exclusive=True)


# --- the connector --------------------------------------------------------------------------


async def test_bank_signs_what_it_sends_and_the_switch_verifies_it_as_the_bank(net: Net) -> None:
    msg_id = _id()
    unsigned = _payment(A, SWITCH_ID, A, B, "100000000001", msg_id)
    async with await connect(net.settings, A) as bank:
        assert isinstance(bank, BankConnector) and bank.participant == A
        await bank.send(unsigned)
        assert bank.counters["sent"] == 1
    async with net.switch() as switch:
        (got,) = await _take(switch, _from(A, msg_id))
    assert got.sender == A  # the broker's word: A's certificate
    verifier = Verifier(TrustStore.load(PKI))
    verifier.verify(got.data, A)
    with pytest.raises(SignatureRejected) as refused:
        verifier.verify(got.data, B)
    assert refused.value.code == "DS0B"
    signed = parse(got.data)
    assert signed.header is not None and views.header(signed.header).signed
    assert _c14n_document(got.data) == _c14n_document(unsigned)  # the Document unchanged


async def test_bank_receives_what_the_switch_signed(net: Net, switch_signer: Signer) -> None:
    await _purge(net.amqp(B), participant_queue(B))
    message = switch_signer.sign(_status(B, _id(), _id(), str(uuid.uuid4()), "ACCC"))
    async with net.switch() as switch:
        await switch.send(B, message)
    async with await connect(net.settings, B) as bank:
        assert await bank.receive(timeout=5) == message
        assert bank.counters["received"] == 1 and not bank.rejected
        assert await bank.receive(timeout=0.3) is None


async def test_bank_never_returns_a_message_the_switch_did_not_sign(
    net: Net, switch_signer: Signer
) -> None:
    await _purge(net.amqp(B), participant_queue(B))
    by_a = _signer_of(A).sign(_status(B, _id(), _id(), None, "ACCC"))
    tampered = switch_signer.sign(_forward(B, "100000000001", _id())).replace(
        b"12.34</IntrBkSttlmAmt>", b"99912.34</IntrBkSttlmAmt>"
    )
    assert b"99912.34" in tampered
    unsigned = _status(B, _id(), _id(), None, "ACCC")
    good = switch_signer.sign(_status(B, _id(), _id(), None, "ACCC"))
    async with net.switch() as switch:
        for data in (by_a, tampered, unsigned, b"not xml at all", good):
            await switch.send(B, data)
    async with await connect(net.settings, B) as bank:
        assert await bank.receive(timeout=5) == good
        assert [(r.code, r.data) for r in bank.rejected] == [
            ("DS0B", by_a),
            ("DS0B", tampered),
            ("DS0B", unsigned),
            ("DS0B", b"not xml at all"),
        ]
        reasons = [r.reason for r in bank.rejected]
        assert "not registered to SWCHUS33XXX" in reasons[0]
        assert "digest mismatch" in reasons[1]
        assert "no signature" in reasons[2]
        assert "not a scheme message" in reasons[3]
        assert bank.counters["rejected"] == 4 and bank.counters["rejected:DS0B"] == 4
        assert bank.counters["received"] == 1
    async with await connect(net.settings, B) as again:  # refused ones were consumed
        assert await again.receive(timeout=0.3) is None


async def test_revoked_and_retired_switch_keys_are_refused_with_their_codes(
    tmp_path: Path,
) -> None:
    """On a PKI of its own (no broker): a rotation is picked up, DS0D and DS0C are told."""
    ca = SchemeCA.init(tmp_path)
    old = ca.ensure(SWITCH_ID)
    mine = ca.ensure(B)
    network = LocalNetwork()
    bank = BankConnector(
        network.connect(B),
        signer=Signer.from_files(mine.signing_key, mine.signing_cert),
        trust=TrustStore.load(tmp_path),
        switch_id=SWITCH_ID,
        trust_refresh=0.2,
    )
    old_signer = Signer.from_files(old.signing_key, old.signing_cert)
    before = old_signer.sign(_status(B, _id(), _id(), None, "ACCC"))
    await network.switch.send(B, before)
    assert await bank.receive(timeout=1) == before

    new = ca.rotate(SWITCH_ID, overlap_days=0)  # the old key is retired at once
    new_signer = Signer.from_files(new.signing_key, new.signing_cert)
    await asyncio.sleep(0.25)  # past trust_refresh: the bank reads the store again
    retired = old_signer.sign(_status(B, _id(), _id(), None, "ACCC"))
    fresh = new_signer.sign(_status(B, _id(), _id(), None, "ACCC"))
    for data in (retired, fresh):
        await network.switch.send(B, data)
    assert await bank.receive(timeout=1) == fresh
    assert [r.code for r in bank.rejected] == ["DS0D"]

    ca.revoke(SWITCH_ID, new.signing_serial, reason="keyCompromise")
    await asyncio.sleep(0.25)
    revoked = new_signer.sign(_status(B, _id(), _id(), None, "ACCC"))
    await network.switch.send(B, revoked)
    assert await bank.receive(timeout=0.5) is None
    assert [r.code for r in bank.rejected] == ["DS0D", "DS0C"]
    assert "revoked" in bank.rejected[-1].reason


async def test_a_key_issued_after_the_bank_started_is_found_by_reading_the_store_again(
    tmp_path: Path,
) -> None:
    ca = SchemeCA.init(tmp_path)
    ca.ensure(SWITCH_ID)
    mine = ca.ensure(B)
    network = LocalNetwork()
    bank = BankConnector(
        network.connect(B),
        signer=Signer.from_files(mine.signing_key, mine.signing_cert),
        trust=TrustStore.load(tmp_path),
        switch_id=SWITCH_ID,
    )
    new = ca.rotate(SWITCH_ID)  # unknown to the store the bank loaded
    await asyncio.sleep(1.05)  # a refused signature re-reads the store at most once a second
    data = Signer.from_files(new.signing_key, new.signing_cert).sign(
        _status(B, _id(), _id(), None, "ACSC")
    )
    await network.switch.send(B, data)
    assert await bank.receive(timeout=1) == data
    assert not bank.rejected


# --- participant-send / participant-receive -------------------------------------------------


def test_participant_send_and_receive_round_trip(
    net: Net, switch_signer: Signer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_purge(net.amqp(B), participant_queue(B)))
    msg_id = _id()
    file = tmp_path / "pacs008.xml"
    file.write_bytes(_payment(A, SWITCH_ID, A, B, "100000000001", msg_id))
    config = str(net.config)

    assert main(["participant-send", "--config", config, "--bank", A, str(file)]) == 0
    out = capsys.readouterr().out
    assert f"sent {file}: pacs.008.001.08 BizMsgIdr {msg_id}" in out and f"by {A}" in out

    forwarded = switch_signer.sign(_forward(B, "100000000001", msg_id))

    async def play_switch() -> None:
        async with net.switch() as switch:
            (got,) = await _take(switch, _from(A, msg_id))
            Verifier(TrustStore.load(PKI)).verify(got.data, A)
            await switch.send(B, _status(B, _id(), msg_id, None, "ACCC"))  # unsigned
            await switch.send(B, forwarded)

    asyncio.run(play_switch())
    out_dir = tmp_path / "inbox"
    receive = ["participant-receive", "--config", config, "--bank", B, "--timeout", "5"]
    assert main([*receive, "--count", "1", "--out", str(out_dir)]) == 0
    captured = capsys.readouterr()
    (written,) = out_dir.glob(f"0001-pacs.008.001.08-{msg_id}.xml")
    assert written.read_bytes() == forwarded
    assert captured.out.strip() == str(written)
    assert "refused a message: DS0B no signature" in captured.err
    (kept,) = out_dir.glob("*-refused-DS0B.xml")
    assert b"<TxSts>ACCC</TxSts>" in kept.read_bytes()
    assert "1 received and verified, 1 refused" in captured.err

    # Nothing more: fewer than --count before the timeout is exit status 1.
    assert main([*receive[:-1], "0.3", "--count", "1"]) == 1
    # A message that is already signed is not signed again, and nothing is sent.
    file.write_bytes(forwarded)
    assert main(["participant-send", "--config", config, "--bank", A, str(file)]) == 2
    assert "cannot be signed: message already carries AppHdr/Sgntr" in capsys.readouterr().err
    assert main(["participant-send", "--config", config, "--bank", "NOBANK1", str(file)]) == 2
    assert "NOBANK1 has no credentials" in capsys.readouterr().err


# --- rtpswitch simulate ---------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)


def _simulate(net: Net, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "switch.cli", "simulate", "--config", str(net.config), *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_simulate_answers_forwarded_payments_as_configured_and_stops_on_sigterm(
    net: Net, switch_signer: Signer, processes: list[subprocess.Popen[str]]
) -> None:
    await _purge(net.amqp(B), participant_queue(B))
    proc = _simulate(net, "--bank", B)
    processes.append(proc)
    accept, reject = _id(), _id()
    async with net.switch() as switch:
        await switch.send(B, switch_signer.sign(_forward(B, "100000000001", accept)))
        # config/demo.toml: B rejects payments to AC04-000001 with AC04
        await switch.send(B, switch_signer.sign(_forward(B, "AC04-000001", reject)))
        answers = await _take(switch, _from(B, accept, reject), n=2, timeout=15)
    verifier = Verifier(TrustStore.load(PKI))
    statuses = {}
    for d in answers:
        verifier.verify(d.data, B)  # signed by B's key
        report = _document(d.data)
        assert isinstance(report, views.StatusReport)
        (tx,) = report.transactions
        statuses[tx.original_msg_id] = (tx.status, tx.reasons)
    assert statuses == {accept: ("ACSP", ()), reject: ("RJCT", ("AC04",))}

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    report_json = json.loads(out)
    assert report_json["bank"] == B and report_json["ended_by"] == "signal"
    assert report_json["counters"]["answered:ACSP"] == 1
    assert report_json["counters"]["answered:RJCT"] == 1
    assert report_json["connector"] == {"received": 2, "sent": 2}
    async with await connect(net.settings, B) as bank:  # both were acknowledged
        assert await bank.receive(timeout=0.3) is None


async def test_simulate_pays_and_ends_when_its_payments_are_final(
    net: Net, switch_signer: Signer, processes: list[subprocess.Popen[str]]
) -> None:
    await _purge(net.amqp(C), participant_queue(C))
    proc = _simulate(net, "--bank", C, "--pay", "1", "--to", A, "--amount", "7.50")
    processes.append(proc)
    async with net.switch() as switch:
        (got,) = await _take(switch, lambda d: d.sender == C and b">7.50<" in d.data, timeout=15)
        Verifier(TrustStore.load(PKI)).verify(got.data, C)
        ct = _document(got.data)
        assert isinstance(ct, views.CreditTransfer)
        (tx,) = ct.transactions
        assert tx.creditor_agent.bicfi == A and tx.amount.value == Decimal("7.50")
        final = _status(C, _id(), ct.msg_id, tx.uetr, "ACSC")
        await switch.send(C, switch_signer.sign(final))
    out, err = await asyncio.to_thread(proc.communicate, timeout=15)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["ended_by"] == "payments"
    assert report["payments"] == {"sent": 1, "final": {"ACSC": 1}, "pending": 0}
