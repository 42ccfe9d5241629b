"""Message security (RULEBOOK §6) and sign-on/off (§1) through a running switch.

With message security every participant signs what it sends and the switch verifies it
against that participant's registered certificates before anything else; the switch
signs all it sends. Refusals carry DS0B (missing, invalid, not the sender's key), DS0C
(revoked) or DS0D (expired), move no money and are archived.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from participants.messages import envelope
from switch.core import Participant, ParticipantStatus
from switch.core.money import to_minor
from switch.engine import Engine
from switch.iso20022 import MessageType, build, views
from switch.iso20022.views import Agent
from switch.security.messages import MessageSecurity
from switch.security.pki import SchemeCA, TrustStore
from switch.security.xmldsig import Signer, Verifier
from switch.settings import load_settings
from switch.store.base import open_store
from switch.transport import LocalNetwork
from tests.e2e.conftest import BANKS, OPENING, SWITCH, A, B, Switch, pacs002, pacs008, status_of

OPEN = int(OPENING * 100)
SWITCH_ID = "SWCHUS33XXX"


class Secure(Switch):
    """The e2e harness with a scheme PKI: banks sign with their keys."""

    ca: SchemeCA
    signers: dict[str, Signer]

    def signed(self, sender: str, raw: bytes) -> bytes:
        return self.signers[sender].sign(raw)


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Secure]:
    pki = tmp_path / "pki"
    ca = SchemeCA.init(pki)
    signers = {}
    for bic in [*BANKS, SWITCH_ID]:
        creds = ca.issue(bic)
        signers[bic] = Signer.from_files(creds.signing_key, creds.signing_cert)
    url = f"sqlite:///{tmp_path / 'switch.db'}"
    settings = load_settings(store=url, response_timeout=1.0)
    store = open_store(url)
    await store.migrate()
    await store.upsert_participants(
        Participant(id=bic, member_id=mid, name=name) for bic, (mid, name) in BANKS.items()
    )
    network = LocalNetwork()
    security = MessageSecurity(pki, SWITCH_ID)
    engine = Engine(settings=settings, store=store, transport=network.switch, security=security)
    sw = Secure(settings, store, network, engine)
    sw.ca, sw.signers = ca, signers
    await engine.start()
    for bic in BANKS:
        await engine.fund(bic, to_minor(OPENING), "test-opening")
    await sw.start()
    try:
        yield sw
    finally:
        await sw.halt()
        await store.close()


def _switch_signed(sw: Secure, raw: bytes, to: str) -> None:
    """`raw` came from the switch with a signature that verifies as the switch's."""
    Verifier(TrustStore.load(sw.ca.directory)).verify(raw, SWITCH_ID)


async def test_signed_payment_clears_and_everything_the_switch_sends_is_signed(
    secure: Secure,
) -> None:
    await secure.send(A, secure.signed(A, pacs008(A, B, amount="40.00")))
    fwd = await secure.receive(B)
    assert fwd.header.signed
    _switch_signed(secure, fwd.raw, B)
    await secure.send(B, secure.signed(B, pacs002(B, fwd, "ACSP")))
    to_a, to_b = await secure.receive(A), await secure.receive(B)
    assert status_of(to_a) == ("ACSC", ()) and status_of(to_b) == ("ACCC", ())
    for r in (to_a, to_b):
        _switch_signed(secure, r.raw, "")
    assert secure.available(A) == OPEN - 4000 and secure.available(B) == OPEN + 4000
    # What the switch archived as sent is what it sent: the signed bytes.
    state = await secure.store.load_state()
    assert not state.unsent


def _tampered(sw: Secure) -> bytes:
    signed = sw.signed(A, pacs008(A, B, amount="10.00"))
    return signed.replace(b">10.00<", b">99.00<")


@pytest.mark.parametrize(
    ("case", "reason"),
    [("unsigned", "DS0B"), ("tampered", "DS0B"), ("wrong key", "DS0B"), ("revoked", "DS0C")],
)
async def test_a_refused_signature_rejects_the_transfer(
    secure: Secure, case: str, reason: str
) -> None:
    raw = pacs008(A, B, amount="10.00")
    if case == "tampered":
        raw = _tampered(secure)
    elif case == "wrong key":
        raw = secure.signed(B, raw)  # B's key, sent on A's channel
    elif case == "revoked":
        raw = secure.signed(A, raw)
        secure.ca.revoke(A)
    before = await secure.archived_inbound()
    await secure.send(A, raw)
    answer = await secure.receive(A)
    status, reasons = status_of(answer)
    assert (status, reasons) == ("RJCT", (reason,))
    _switch_signed(secure, answer.raw, A)
    await secure.nothing_for(B)
    assert secure.available(A) == OPEN and secure.engine.book.position(A).reserved == 0
    assert await secure.archived_inbound() == before + 1


async def test_an_expired_signing_key_is_refused_ds0d(secure: Secure) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    creds = secure.ca.issue(A, days=2, now=long_ago)
    old = Signer.from_files(creds.signing_key, creds.signing_cert)
    await secure.send(A, old.sign(pacs008(A, B)))
    assert status_of(await secure.receive(A)) == ("RJCT", ("DS0D",))
    assert secure.available(A) == OPEN


async def test_an_unsigned_status_report_gets_admi002_ds0b(secure: Secure) -> None:
    await secure.send(A, secure.signed(A, pacs008(A, B, amount="3.00")))
    fwd = await secure.receive(B)
    await secure.send(B, pacs002(B, fwd, "ACSP"))
    reject = await secure.receive(B)
    assert isinstance(reject.view, views.MessageReject)
    assert reject.view.reason == "DS0B"
    assert secure.engine.book.position(A).reserved == 300  # still waiting for a real answer


def _system_event(sender: str, code: str) -> bytes:
    now = datetime.now(UTC)
    doc = build.system_event(code=code, time=now, params=(sender,), description="test")
    n = uuid4().hex[:20]
    return envelope(Agent(bicfi=sender), SWITCH, MessageType.ADMI_004, f"H{n}", doc, now)


async def test_sign_off_and_on_by_admi004(switch: Switch) -> None:
    await switch.send(B, _system_event(B, "SGOF"))
    ack = await switch.receive(B)
    assert isinstance(ack.view, views.SystemEvent) and ack.view.code == "SGOF"
    assert "signed_off" in (ack.view.description or "")
    # To a signed-off bank: AB08 at once; from it: AG01.
    await switch.send(A, pacs008(A, B))
    assert status_of(await switch.receive(A)) == ("RJCT", ("AB08",))
    await switch.send(B, pacs008(B, A))
    assert status_of(await switch.receive(B)) == ("RJCT", ("AG01",))
    await switch.nothing_for(A)
    # The state is durable: a restarted switch knows B signed off.
    state = await switch.store.load_state()
    assert state.participants[B].status is ParticipantStatus.SIGNED_OFF
    await switch.send(B, _system_event(B, "SGON"))
    ack = await switch.receive(B)
    assert isinstance(ack.view, views.SystemEvent) and "active" in (ack.view.description or "")
    await switch.send(A, pacs008(A, B))
    assert isinstance((await switch.receive(B)).view, views.CreditTransfer)
    state = await switch.store.load_state()
    assert state.participants[B].status is ParticipantStatus.ACTIVE


async def test_sign_off_for_another_bank_is_refused_rc01(switch: Switch) -> None:
    raw = _system_event(A, "SGOF").replace(b"<EvtParam>" + A.encode(), b"<EvtParam>" + B.encode())
    await switch.send(A, raw)
    reject = await switch.receive(A)
    assert isinstance(reject.view, views.MessageReject) and reject.view.reason == "RC01"
    await switch.send(A, pacs008(A, B))
    assert isinstance((await switch.receive(B)).view, views.CreditTransfer)
