"""The connector a member bank runs: sign what it sends, verify what it receives.

Theory of operation. A bank speaks to the switch over a `ParticipantChannel` (in
production the mutual-TLS AMQP channel: the certificate is the bank's identity and the
broker lets it publish only to the switch and read only its own queue, RULEBOOK §6-7).
The connector is itself a `ParticipantChannel` wrapped around that channel, so whatever
runs a bank (a core-banking adapter, the simulated banks, the SFTP bridge) talks to it
exactly as to a bare channel, and gets the message layer's security for free:

* `send` signs every message with the bank's signing key (enveloped XML-DSig in
  `AppHdr/Sgntr`, `switch.security.xmldsig.Signer`) and hands the signed bytes to the
  channel. There is no unsigned mode: the switch refuses an unsigned message (DS0B).
* `receive` returns the next message from the switch whose signature verifies as the
  switch's (the sender is the scheme's switch BICFI, the key one of the switch's signing
  certificates in the scheme's trust store, VALID now). A message that fails is logged,
  recorded in `rejected` with its reason code (DS0B invalid or missing, DS0C revoked,
  DS0D expired) and dropped: the bank never acts on a message it could not verify, and
  the channel acknowledges it like any other, so it is not delivered again.

The trust store (scheme CA, index of issued certificates, CRL) is re-read every
`trust_refresh` seconds, and before a refused signature is checked a second time (at most once a
second: the switch may have rotated its key since the store was read); a revocation is
thus seen within `trust_refresh`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

from switch.iso20022.parse import UnusableMessage
from switch.security.pki import PkiError, TrustStore, load_credentials, validate_participant
from switch.security.xmldsig import SignatureRejected, Signer, Verifier
from switch.settings import Settings
from switch.transport.amqp import AmqpParticipantChannel, AmqpSettings
from switch.transport.base import ParticipantChannel

__all__ = [
    "DEFAULT_KEEP_REJECTED",
    "DEFAULT_TRUST_REFRESH",
    "BankConnector",
    "RejectedMessage",
    "connect",
]

log = logging.getLogger(__name__)

DEFAULT_TRUST_REFRESH: Final = 60.0
"""Seconds between re-reads of the trust store (so revocations are seen)."""
DEFAULT_KEEP_REJECTED: Final = 1000
"""How many rejected messages `BankConnector.rejected` keeps (the oldest are forgotten)."""
_RETRY_RELOAD: Final = 1.0
"""A refused signature re-reads the trust store and verifies again, at most this often
(seconds): the switch may have rotated its key since the store was read."""
_DS0B: Final = "DS0B"


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedMessage:
    """A message from the switch the bank refused to act on: why, and the bytes as received."""

    code: str
    """DS0B (signature missing or invalid, key not the switch's; also unreadable bytes),
    DS0C (the switch's signing key is revoked) or DS0D (expired)."""
    reason: str
    data: bytes
    received_at: datetime


@runtime_checkable
class _Closable(Protocol):
    async def close(self) -> None: ...


class BankConnector:
    """A bank's `ParticipantChannel` that signs what it sends and verifies what it receives.

    `channel` carries the bytes; `signer` holds the bank's signing key; `trust` is the
    scheme's trust store, in which the switch's signing certificates are registered
    under `switch_id`.
    """

    def __init__(
        self,
        channel: ParticipantChannel,
        *,
        signer: Signer,
        trust: TrustStore,
        switch_id: str,
        trust_refresh: float = DEFAULT_TRUST_REFRESH,
        keep_rejected: int = DEFAULT_KEEP_REJECTED,
    ) -> None:
        if trust_refresh <= 0:
            raise ValueError("trust_refresh must be positive")
        if keep_rejected < 0:
            raise ValueError("keep_rejected must be 0 or more")
        self.participant = channel.participant
        self.switch_id = validate_participant(switch_id)
        self.channel = channel
        self.signer = signer
        self.trust = trust
        self.trust_refresh = trust_refresh
        self._verifier = Verifier(trust)
        self._loaded = time.monotonic()
        self.rejected: deque[RejectedMessage] = deque(maxlen=keep_rejected)
        """The latest messages refused (at most `keep_rejected`), oldest first."""
        self.counters: Counter[str] = Counter()
        """`sent`, `received` (verified and returned), `rejected` and `rejected:<code>`."""

    def __repr__(self) -> str:
        return f"<BankConnector {self.participant} to {self.switch_id}>"

    # --- sending ---------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        """`data` (a BizMsg without `Sgntr`) signed with the bank's key.

        Raises UnusableMessage for bytes that are not a scheme message, ValueError for a
        message that cannot be signed (no envelope, already signed, carrying comments).
        """
        return self.signer.sign(data)

    async def submit(self, data: bytes) -> bytes:
        """Sign `data`, send it to the switch, and return the signed bytes as sent."""
        signed = self.signer.sign(data)
        await self.channel.send(signed)
        self.counters["sent"] += 1
        return signed

    async def send(self, data: bytes) -> None:
        """Sign `data` with the bank's key and send it to the switch."""
        await self.submit(data)

    # --- receiving -------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message from the switch whose signature verifies as the switch's, or
        None after `timeout` seconds; messages that fail are recorded and skipped."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            data = await self.channel.receive(remaining)
            if data is None:
                return None
            refused = self.check(data)
            if refused is None:
                self.counters["received"] += 1
                return data
            self._refuse(refused)
            if deadline is not None and loop.time() >= deadline:
                return None

    def check(self, data: bytes) -> RejectedMessage | None:
        """None when `data` is signed by the switch with a key valid now, else why not."""
        now = time.monotonic()
        if now - self._loaded >= self.trust_refresh:
            self._reload(now)
        try:
            return self._verify(data)
        except SignatureRejected as exc:
            if now - self._loaded < _RETRY_RELOAD:
                return self._rejection(exc.code, str(exc), data)
        # Perhaps signed with a key issued (or a status changed) since the store was read:
        # read it again and verify once more.
        self._reload(now)
        try:
            return self._verify(data)
        except SignatureRejected as exc:
            return self._rejection(exc.code, str(exc), data)

    def _verify(self, data: bytes) -> RejectedMessage | None:
        """None when `data` verifies; SignatureRejected when its signature does not; any
        other failure (not a scheme message, an error while verifying) as a refusal."""
        try:
            self._verifier.verify(data, self.switch_id)
        except SignatureRejected:
            raise
        except UnusableMessage as exc:
            return self._rejection(_DS0B, f"not a scheme message: {exc}", data)
        except Exception as exc:  # the bank must never act on what it could not verify
            log.exception("%s: verifying a message from the switch failed", self.participant)
            return self._rejection(_DS0B, f"verification failed: {type(exc).__name__}", data)
        return None

    def _reload(self, now: float) -> None:
        try:
            self.trust.reload()
        except PkiError as exc:
            log.warning("%s: trust store not re-read (%s); using the last one", self, exc)
        self._loaded = now

    def _rejection(self, code: str, reason: str, data: bytes) -> RejectedMessage:
        return RejectedMessage(code=code, reason=reason, data=data, received_at=datetime.now(UTC))

    def _refuse(self, rejected: RejectedMessage) -> None:
        self.rejected.append(rejected)
        self.counters["rejected"] += 1
        self.counters["rejected:" + rejected.code] += 1
        log.warning(
            "%s: refused a message from the switch (%d bytes): %s %s",
            self.participant,
            len(rejected.data),
            rejected.code,
            rejected.reason,
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channel (the AMQP channel first acknowledges the last message returned)."""
        if isinstance(self.channel, _Closable):
            await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(settings: Settings, participant: str) -> BankConnector:
    """A connected `BankConnector` for `participant` over the mutual-TLS AMQP channel.

    The TLS pair, signing key and trust store come from `settings.service.pki_dir`; the
    broker from `settings.service`. PkiError names missing credentials; AmqpConnectError
    (a ConnectionError) says why the broker could not be reached or refused the bank.
    """
    service = settings.service
    creds = load_credentials(service.pki_dir, participant)
    amqp = AmqpSettings(
        ca_cert=creds.ca_cert,
        cert=creds.tls_cert,
        key=creds.tls_key,
        host=service.amqp_host,
        port=service.amqp_port,
        vhost=service.amqp_vhost,
    )
    signer = Signer.from_files(creds.signing_key, creds.signing_cert)
    trust = TrustStore.load(service.pki_dir)
    channel = AmqpParticipantChannel(amqp, creds.participant)
    connector = BankConnector(
        channel, signer=signer, trust=trust, switch_id=settings.scheme.switch_bicfi
    )
    try:
        await channel.open()
    except BaseException:
        await channel.close()
        raise
    return connector
