"""The switch's message security: verify what participants send, sign what the switch sends.

Built from the scheme PKI directory and the switch's own id: the trust store (every
participant's signing certificates, revocations, rotations) and the switch's current
signing key. A revocation or rotation made with `rtpswitch pki` while the switch runs is
picked up by `refresh`, which the engine and its reader processes call once per batch
(it only re-reads the PKI index when one of its files changed).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from lxml import etree

from switch.security.pki import TrustStore, load_credentials
from switch.security.xmldsig import SignatureRejected, Signer, Verifier


class MessageSecurity:
    """Signature checks and signing for one switch identity."""

    def __init__(self, pki_dir: Path, switch_id: str) -> None:
        self.pki_dir = pki_dir
        self.switch_id = switch_id
        self.trust = TrustStore.load(pki_dir)
        creds = load_credentials(pki_dir, switch_id)
        self.signer = Signer.from_files(creds.signing_key, creds.signing_cert)
        self.verifier = Verifier(self.trust)
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[float, ...]:
        stamps: list[float] = []
        for name in ("index.json", "crl.pem"):
            try:
                stamps.append((self.pki_dir / "ca" / name).stat().st_mtime)
            except FileNotFoundError:
                stamps.append(0.0)
        return tuple(stamps)

    def refresh(self) -> None:
        """Re-read the trust store if the PKI changed since it was loaded."""
        stamp = self._files_stamp()
        if stamp != self._stamp:
            self.trust.reload()
            self._stamp = stamp

    def check(self, root: etree._Element, sender: str, at: datetime) -> tuple[str, str] | None:
        """None when `root` (a BizMsg) carries a valid signature of `sender`, else (code, why)."""
        try:
            self.verifier.verify_tree(root, sender, at=at)
        except SignatureRejected as exc:
            return exc.code, str(exc)
        return None

    def sign(self, message: bytes) -> bytes:
        """`message` (a BizMsg the switch built) signed with the switch's key."""
        return self.signer.sign(message)
