"""The scheme PKI: the scheme CA, participant credentials, rotation and revocation.

Theory of operation. The scheme runs one certificate authority. Every participant (and
the switch itself, under its own id) receives two credentials from it: a TLS client
certificate, which identifies the bank to the message broker (CN = participant id, EKU
clientAuth), and a message-signing key and certificate, which binds the XML-DSig in
`AppHdr/Sgntr` to the bank (CN = participant id, keyUsage digitalSignature and
nonRepudiation, EKU documentSigning only, so it cannot open a TLS session). The broker
and the operator API get a TLS server certificate (EKU serverAuth, DNS and IP SANs).

Verifiers never need the CA key: `TrustStore` reads the CA certificate, the index of
issued certificates and the CRL, and answers "is this certificate VALID at that instant,
or REVOKED, EXPIRED, NOT_YET_VALID, or not ours (UNKNOWN)?". Key rotation has an overlap:
`rotate` issues new credentials and records, for each of the participant's older
certificates, a `retire_at` instant (the earlier of its expiry and now + overlap); from
that instant `TrustStore` reports it EXPIRED, and the next CRL lists it with reason
`superseded`, so the broker refuses the old TLS certificate too. Revocation by the
operator is permanent: a revoked certificate is REVOKED at every instant. The CRL is
re-signed on every change and by `refresh_crl` (`rtpswitch pki crl`), which should run
more often than `CRL_VALIDITY`.

Directory layout (`<dir>` is `--dir`, env `RTPSWITCH_PKI`, default `var/pki`)::

    <dir>/ca/ca.key                          CA private key (PEM PKCS#8, mode 0600)
    <dir>/ca/ca.crt                          CA certificate (self-signed)
    <dir>/ca/crl.pem                         CRL signed by the CA, re-signed on every change
    <dir>/ca/index.json                      every certificate issued: serial -> participant,
                                             kind (tls|signing|server), key_type, subject,
                                             not_before, not_after, retire_at, revoked_at,
                                             reason, path; and the last CRL number
    <dir>/ca/.lock                           serialises changes (flock)
    <dir>/participants/<ID>/tls.crt, tls.key the current TLS client pair
    <dir>/participants/<ID>/tls-<serial>.crt, tls-<serial>.key   every TLS pair issued
    <dir>/participants/<ID>/signing-<serial>.crt, signing-<serial>.key
    <dir>/participants/<ID>/current.json     the current tls and signing serials, key type
    <dir>/server/server.crt, server.key      the current TLS server pair
    <dir>/server/server-<serial>.crt         every server certificate issued

Serials are random (up to 159 bits) and written in decimal. Private keys are written
unencrypted, mode 0600, atomically (temporary file + `os.replace`); a reader never sees a
half-written file. Participant ids are letters and digits, 1-35 characters (a BICFI or a
member id), and are upper-cased.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CLOCK_SKEW",
    "CRL_VALIDITY",
    "KEY_TYPES",
    "REASONS",
    "CertRecord",
    "CertStatus",
    "IssuedCredentials",
    "PkiError",
    "PrivateKey",
    "SchemeCA",
    "TrustStore",
    "load_credentials",
    "load_private_key",
    "validate_participant",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The private key types the scheme issues (ECDSA P-256/P-384 and RSA)."""

KEY_TYPES: Final = ("ec", "rsa")
"""Participant key types: ECDSA on P-256 (the default) or RSA-2048."""

RSA_BITS: Final = 2048
CLOCK_SKEW: Final = timedelta(minutes=5)
"""Certificates start this much before the instant of issue, for participants' clocks."""

CRL_VALIDITY: Final = timedelta(days=30)
"""`nextUpdate` of the CRL after its `thisUpdate`."""

DOCUMENT_SIGNING: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): the only EKU of a message-signing certificate."""

REASONS: Final = {
    flag.name: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)
}
"""Revocation reasons accepted by `revoke` (RFC 5280 names; holds are not supported)."""

_UNSPECIFIED: Final = x509.ReasonFlags.unspecified

KINDS: Final = ("tls", "signing", "server")

_PARTICIPANT: Final = re.compile(r"[A-Za-z0-9]{1,35}")
_DNS_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_INDEX_VERSION: Final = 1


class PkiError(Exception):
    """A PKI operation was refused; the message names the participant, file or field."""


class CertStatus(enum.Enum):
    """What a certificate is worth at an instant."""

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"  # past notAfter, or past its retire_at after a rotation
    NOT_YET_VALID = "not-yet-valid"
    UNKNOWN = "unknown"  # not issued by this scheme CA


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """A participant's current credentials: where its TLS and signing files are."""

    participant: str
    tls_cert: Path
    tls_key: Path
    signing_cert: Path
    signing_key: Path
    ca_cert: Path
    signing_serial: int
    tls_serial: int
    key_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CertRecord:
    """One certificate in the CA's index (what `pki list` shows)."""

    serial: int
    participant: str | None  # None for server certificates
    kind: str  # tls | signing | server
    key_type: str
    subject: str
    not_before: datetime
    not_after: datetime
    path: Path
    retire_at: datetime | None = None
    revoked_at: datetime | None = None
    reason: str | None = None

    def status(self, at: datetime) -> CertStatus:
        """The status the index gives this certificate at `at` (CRL and signature aside)."""
        at = _instant(at)
        if self.revoked_at is not None:
            return CertStatus.REVOKED
        if at < self.not_before:
            return CertStatus.NOT_YET_VALID
        if at > self.not_after or (self.retire_at is not None and at >= self.retire_at):
            return CertStatus.EXPIRED
        return CertStatus.VALID

    def to_json(self, directory: Path) -> dict[str, Any]:
        """The index entry (paths relative to the PKI directory)."""
        return {
            "participant": self.participant,
            "kind": self.kind,
            "key_type": self.key_type,
            "subject": self.subject,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "retire_at": _iso(self.retire_at),
            "revoked_at": _iso(self.revoked_at),
            "reason": self.reason,
            "path": self.path.relative_to(directory).as_posix(),
        }

    @classmethod
    def from_json(cls, serial: str, entry: dict[str, Any], directory: Path) -> CertRecord:
        """Read an index entry; PkiError names the serial and field at fault."""
        try:
            kind = str(entry["kind"])
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r}")
            participant = entry["participant"]
            return cls(
                serial=int(serial),
                participant=None if participant is None else str(participant),
                kind=kind,
                key_type=str(entry["key_type"]),
                subject=str(entry["subject"]),
                not_before=_parse_instant(entry["not_before"]),
                not_after=_parse_instant(entry["not_after"]),
                path=directory / str(entry["path"]),
                retire_at=_parse_optional(entry.get("retire_at")),
                revoked_at=_parse_optional(entry.get("revoked_at")),
                reason=None if entry.get("reason") is None else str(entry["reason"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PkiError(f"index.json: bad entry for serial {serial}: {exc}") from exc


# --- small helpers -------------------------------------------------------------------------


def validate_participant(participant: str) -> str:
    """The participant id in canonical form (upper case); PkiError if it is not one."""
    if not isinstance(participant, str) or not _PARTICIPANT.fullmatch(participant):
        raise PkiError(
            f"participant id {participant!r} is invalid: use 1-35 letters and digits "
            "(a BICFI such as BNKAUS33XXX, or a member id)"
        )
    return participant.upper()


def _instant(at: datetime | None) -> datetime:
    """`at` (or now) in UTC, to the second, as certificates count time."""
    if at is None:
        at = datetime.now(UTC)
    elif at.tzinfo is None:
        raise ValueError(f"instant {at.isoformat()} has no time zone; pass an aware datetime")
    return at.astimezone(UTC).replace(microsecond=0)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _parse_instant(text: Any) -> datetime:
    at = datetime.fromisoformat(str(text))
    if at.tzinfo is None:
        raise ValueError(f"instant {text!r} has no time zone")
    return at.astimezone(UTC)


def _parse_optional(text: Any) -> datetime | None:
    return None if text is None else _parse_instant(text)


def _check_key_type(key_type: str) -> str:
    if key_type not in KEY_TYPES:
        raise PkiError(f"key type {key_type!r} is not supported: use 'ec' (P-256) or 'rsa' (2048)")
    return key_type


def _check_days(days: int, field: str = "days") -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PkiError(f"{field} must be a whole number of days, at least 1 (got {days!r})")
    return days


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _key_type_of(key: Any) -> str:
    return "rsa" if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) else "ec"


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: {what} is missing") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def _read_cert(path: Path, what: str = "certificate") -> x509.Certificate:
    data = _read_bytes(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from exc


def load_private_key(path: Path) -> PrivateKey:
    """Read a private key written by the PKI (PEM, unencrypted); PkiError names the file."""
    data = _read_bytes(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `cert` names `ca` as issuer and carries a valid signature of its key."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def _parse_hostname(name: str) -> x509.GeneralName:
    """A server SAN for `name`: an IP address, or a DNS name (optionally `*.` wildcard)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name.lower().rstrip(".")
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise PkiError(f"hostname {name!r} is neither a DNS name nor an IP address")
    return x509.DNSName(host)


# --- the index -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Index:
    """The CA's record of every certificate it issued, and the last CRL number."""

    records: dict[int, CertRecord]
    crl_number: int = 0

    @classmethod
    def read(cls, path: Path, directory: Path) -> _Index:
        data = _read_bytes(path, "certificate index")
        try:
            raw = json.loads(data)
            if raw.get("version") != _INDEX_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {_INDEX_VERSION}")
            entries = raw["certificates"]
            crl_number = int(raw.get("crl_number", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(f"{path}: unreadable certificate index ({exc})") from exc
        records = {
            int(serial): CertRecord.from_json(serial, entry, directory)
            for serial, entry in entries.items()
        }
        return cls(records, crl_number)

    def write(self, path: Path, directory: Path) -> None:
        body = {
            "version": _INDEX_VERSION,
            "crl_number": self.crl_number,
            "certificates": {
                str(serial): record.to_json(directory)
                for serial, record in sorted(
                    self.records.items(), key=lambda item: (item[1].not_before, item[0])
                )
            },
        }
        _atomic_write(path, (json.dumps(body, indent=2) + "\n").encode(), 0o644)

    def of(self, participant: str, kind: str | None = None) -> list[CertRecord]:
        found = [
            r
            for r in self.records.values()
            if r.participant == participant and (kind is None or r.kind == kind)
        ]
        return sorted(found, key=lambda r: (r.not_before, r.serial))

    def new_serial(self) -> int:
        while True:
            serial = x509.random_serial_number()
            if serial not in self.records and serial.bit_length() >= 64:
                return serial

    def crl_entries(self, at: datetime) -> list[tuple[int, datetime, x509.ReasonFlags]]:
        """What the CRL signed at `at` lists: revocations, and retirements already due."""
        entries = []
        for serial, r in self.records.items():
            if r.revoked_at is not None:
                entries.append((serial, r.revoked_at, REASONS.get(r.reason or "", _UNSPECIFIED)))
            elif r.retire_at is not None and r.retire_at <= at:
                entries.append((serial, r.retire_at, x509.ReasonFlags.superseded))
        return sorted(entries)


# --- the CA --------------------------------------------------------------------------------


class SchemeCA:
    """The scheme certificate authority: issues, rotates and revokes credentials.

    Holds the CA key, so it runs where the PKI directory lives (the operator's
    `rtpswitch pki` commands and provisioning scripts). Every change re-reads the index
    under a lock, so two commands at once cannot lose each other's certificates.
    """

    def __init__(self, directory: Path, key: PrivateKey, certificate: x509.Certificate) -> None:
        self.directory = directory
        self.key = key
        self.certificate = certificate

    # paths

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate that TLS peers and verifiers trust."""
        return self.directory / "ca" / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        """The CA private key (mode 0600)."""
        return self.directory / "ca" / "ca.key"

    @property
    def crl_path(self) -> Path:
        """The CRL signed by the CA."""
        return self.directory / "ca" / "crl.pem"

    @property
    def index_path(self) -> Path:
        """The index of every certificate issued."""
        return self.directory / "ca" / "index.json"

    def participant_dir(self, participant: str) -> Path:
        """Where a participant's credentials are written."""
        return self.directory / "participants" / validate_participant(participant)

    @property
    def server_cert_path(self) -> Path:
        """The current TLS server certificate (broker listener, operator API)."""
        return self.directory / "server" / "server.crt"

    @property
    def server_key_path(self) -> Path:
        """The current TLS server private key."""
        return self.directory / "server" / "server.key"

    # creation and loading

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        name: str = "RTP Switch Scheme CA",
        days: int = 3650,
        now: datetime | None = None,
    ) -> SchemeCA:
        """Create the scheme CA in `directory`; if one is there already, load it unchanged."""
        directory = Path(directory)
        _check_days(days)
        if not name or len(name) > 64:
            raise PkiError(f"CA name {name!r} must be 1-64 characters")
        ca_dir = directory / "ca"
        ca_dir.mkdir(parents=True, exist_ok=True)
        with _locked(ca_dir):
            if (ca_dir / "ca.key").exists() or (ca_dir / "ca.crt").exists():
                return cls.load(directory)
            at = _instant(now)
            key = ec.generate_private_key(ec.SECP384R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(at - CLOCK_SKEW)
                .not_valid_after(at + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA384())
            )
            # The key first: a CA certificate without its key would block every later init.
            _atomic_write(ca_dir / "ca.key", _key_pem(key), 0o600)
            _atomic_write(ca_dir / "ca.crt", _cert_pem(cert), 0o644)
            ca = cls(directory, key, cert)
            index = _Index({})
            ca._write_crl(index, at)
            index.write(ca.index_path, directory)
            return ca

    @classmethod
    def load(cls, directory: Path) -> SchemeCA:
        """Load the scheme CA from `directory`; PkiError if there is none or it is broken."""
        directory = Path(directory)
        ca_dir = directory / "ca"
        if not (ca_dir / "ca.key").exists() and not (ca_dir / "ca.crt").exists():
            raise PkiError(f"{directory}: no scheme CA here (run `rtpswitch pki init`)")
        key = load_private_key(ca_dir / "ca.key")
        cert = _read_cert(ca_dir / "ca.crt", "CA certificate")
        if _public_der(key.public_key()) != _public_der(cert.public_key()):
            raise PkiError(f"{ca_dir / 'ca.key'}: does not match {ca_dir / 'ca.crt'}")
        return cls(directory, key, cert)

    # issuing

    def issue(
        self,
        participant: str,
        *,
        key_type: str = "ec",
        days: int = 365,
        now: datetime | None = None,
    ) -> IssuedCredentials:
        """Issue a new TLS client certificate and a new signing key for `participant`.

        Earlier certificates of the participant stay valid until they expire or are
        revoked; use `rotate` to retire them.
        """
        participant = validate_participant(participant)
        _check_key_type(key_type)
        _check_days(days)
        at = _instant(now)
        with self._changing(at) as index:
            return self._issue(index, participant, key_type, days, at)

    def ensure(
        self,
        participant: str,
        *,
        key_type: str = "ec",
        days: int = 365,
        now: datetime | None = None,
    ) -> IssuedCredentials:
        """The participant's current credentials if usable now, else newly issued ones.

        Usable: both files of both pairs are present and match, both certificates are
        VALID at `now`, and their key type is `key_type`.
        """
        participant = validate_participant(participant)
        _check_key_type(key_type)
        _check_days(days)
        at = _instant(now)
        with self._changing(at) as index:
            current = self._usable(index, participant, key_type, at)
            if current is not None:
                return current
            return self._issue(index, participant, key_type, days, at)

    def rotate(
        self,
        participant: str,
        *,
        key_type: str = "ec",
        days: int = 365,
        overlap_days: int = 7,
        now: datetime | None = None,
    ) -> IssuedCredentials:
        """Issue new credentials and retire the older ones after an overlap.

        Each earlier certificate of the participant (TLS and signing) not yet revoked gets
        `retire_at` = min(its notAfter, now + overlap_days); from then on it is EXPIRED.
        """
        participant = validate_participant(participant)
        _check_key_type(key_type)
        _check_days(days)
        if isinstance(overlap_days, bool) or not isinstance(overlap_days, int) or overlap_days < 0:
            raise PkiError(f"overlap_days must be a whole number, 0 or more (got {overlap_days!r})")
        at = _instant(now)
        retire = at + timedelta(days=overlap_days)
        with self._changing(at) as index:
            earlier = [r for r in index.of(participant) if r.kind in ("tls", "signing")]
            if not earlier:
                raise PkiError(
                    f"participant {participant} has no credentials to rotate (use `pki issue`)"
                )
            for r in earlier:
                if r.revoked_at is not None:
                    continue
                retire_at = min(r.not_after, retire)
                if r.retire_at is None or retire_at < r.retire_at:
                    index.records[r.serial] = replace(r, retire_at=retire_at)
            return self._issue(index, participant, key_type, days, at)

    def credentials(self, participant: str) -> IssuedCredentials:
        """The participant's current credentials (whatever their status); PkiError if none."""
        return load_credentials(self.directory, participant)

    def issue_server(
        self,
        hostnames: Sequence[str],
        *,
        days: int = 825,
        key_type: str = "ec",
        now: datetime | None = None,
    ) -> tuple[Path, Path]:
        """Issue a TLS server certificate and key for `hostnames`; return (cert, key) paths."""
        sans = self._server_names(hostnames)
        _check_key_type(key_type)
        _check_days(days)
        at = _instant(now)
        with self._changing(at) as index:
            return self._issue_server(index, hostnames, sans, key_type, days, at)

    def ensure_server(
        self,
        hostnames: Sequence[str],
        *,
        days: int = 825,
        key_type: str = "ec",
        now: datetime | None = None,
    ) -> tuple[Path, Path]:
        """The current server pair if VALID now and covering `hostnames`, else a new one."""
        sans = self._server_names(hostnames)
        _check_key_type(key_type)
        _check_days(days)
        at = _instant(now)
        with self._changing(at) as index:
            if self._server_usable(index, sans, at):
                return self.server_cert_path, self.server_key_path
            return self._issue_server(index, hostnames, sans, key_type, days, at)

    # revocation

    def revoke(
        self,
        participant: str,
        serial: int | None = None,
        *,
        reason: str = "unspecified",
        now: datetime | None = None,
    ) -> list[int]:
        """Revoke one certificate of the participant, or all of them; re-sign the CRL.

        Returns the serials revoked by this call (a certificate already revoked keeps its
        first revocation and is not returned).
        """
        participant = validate_participant(participant)
        flag = _reason(reason)
        at = _instant(now)
        with self._changing(at) as index:
            records = index.of(participant)
            if not records:
                raise PkiError(f"participant {participant} has no certificates from this CA")
            if serial is not None:
                records = [r for r in records if r.serial == serial]
                if not records:
                    raise PkiError(f"serial {serial} is not a certificate of {participant}")
            revoked = []
            for r in records:
                if r.revoked_at is None:
                    index.records[r.serial] = replace(r, revoked_at=at, reason=flag.name)
                    revoked.append(r.serial)
            return revoked

    def refresh_crl(self, now: datetime | None = None) -> Path:
        """Re-sign the CRL (new thisUpdate/nextUpdate, retirements now due); return its path."""
        at = _instant(now)
        with self._changing(at):
            pass
        return self.crl_path

    # reading

    def certificates(self, participant: str | None = None) -> list[CertRecord]:
        """Every certificate issued (or the participant's), oldest first."""
        index = _Index.read(self.index_path, self.directory)
        if participant is None:
            return sorted(
                index.records.values(),
                key=lambda r: (r.participant or "", r.kind, r.not_before, r.serial),
            )
        return index.of(validate_participant(participant))

    def trust_store(self) -> TrustStore:
        """What verifiers use, read from this CA's directory."""
        return TrustStore.load(self.directory)

    # internals

    @contextlib.contextmanager
    def _changing(self, at: datetime) -> Iterator[_Index]:
        """Lock, read the index, let the caller change it, then write it and a CRL as of `at`."""
        with _locked(self.directory / "ca"):
            index = _Index.read(self.index_path, self.directory)
            yield index
            # The CRL before the index: a revocation is in force before it is recorded.
            self._write_crl(index, at)
            index.write(self.index_path, self.directory)

    def _write_crl(self, index: _Index, at: datetime) -> None:
        index.crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(at)
            .next_update(at + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(index.crl_number), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
        )
        for serial, when, flag in index.crl_entries(at):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if flag is not _UNSPECIFIED:  # RFC 5280 5.3.1: omit the code for unspecified
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self.key, hashes.SHA384())
        _atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())

    def _certificate(
        self,
        *,
        serial: int,
        subject: x509.Name,
        key: PrivateKey,
        at: datetime,
        days: int,
        usage: x509.KeyUsage,
        purposes: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        not_after = min(at + timedelta(days=days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(at - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(self._authority_key_id(), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA384())

    def _record(
        self, cert: x509.Certificate, participant: str | None, kind: str, path: Path
    ) -> CertRecord:
        return CertRecord(
            serial=cert.serial_number,
            participant=participant,
            kind=kind,
            key_type=_key_type_of(cert.public_key()),
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            path=path,
        )

    def _issue(
        self, index: _Index, participant: str, key_type: str, days: int, at: datetime
    ) -> IssuedCredentials:
        folder = self.directory / "participants" / participant
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, participant)])
        rsa_key = key_type == "rsa"

        tls_key = _new_key(key_type)
        tls_serial = index.new_serial()
        tls_cert = self._certificate(
            serial=tls_serial,
            subject=subject,
            key=tls_key,
            at=at,
            days=days,
            usage=_usage(digital_signature=True, key_encipherment=rsa_key),
            purposes=[ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        signing_key = _new_key(key_type)
        signing_serial = index.new_serial()
        signing_cert = self._certificate(
            serial=signing_serial,
            subject=subject,
            key=signing_key,
            at=at,
            days=days,
            usage=_usage(digital_signature=True, content_commitment=True),
            purposes=[DOCUMENT_SIGNING],
        )

        tls_named = folder / f"tls-{tls_serial}.crt"
        signing_path = folder / f"signing-{signing_serial}.crt"
        signing_key_path = folder / f"signing-{signing_serial}.key"
        _atomic_write(folder / f"tls-{tls_serial}.key", _key_pem(tls_key), 0o600)
        _atomic_write(tls_named, _cert_pem(tls_cert), 0o644)
        _atomic_write(signing_key_path, _key_pem(signing_key), 0o600)
        _atomic_write(signing_path, _cert_pem(signing_cert), 0o644)
        # The current pair under fixed names, key first (a reader that loads the pair in
        # between gets a mismatch it can retry; current.json names the serial files).
        _atomic_write(folder / "tls.key", _key_pem(tls_key), 0o600)
        _atomic_write(folder / "tls.crt", _cert_pem(tls_cert), 0o644)

        index.records[tls_serial] = self._record(tls_cert, participant, "tls", tls_named)
        index.records[signing_serial] = self._record(
            signing_cert, participant, "signing", signing_path
        )
        current = {
            "participant": participant,
            "key_type": key_type,
            "tls_serial": str(tls_serial),
            "signing_serial": str(signing_serial),
        }
        _atomic_write(
            folder / "current.json", (json.dumps(current, indent=2) + "\n").encode(), 0o644
        )
        return load_credentials(self.directory, participant)

    def _usable(
        self, index: _Index, participant: str, key_type: str, at: datetime
    ) -> IssuedCredentials | None:
        try:
            creds = load_credentials(self.directory, participant)
            for serial, cert_path, key_path in (
                (creds.tls_serial, creds.tls_cert, creds.tls_key),
                (creds.signing_serial, creds.signing_cert, creds.signing_key),
            ):
                record = index.records.get(serial)
                cert = _read_cert(cert_path)
                key = load_private_key(key_path)
                if (
                    record is None
                    or record.participant != participant
                    or record.status(at) is not CertStatus.VALID
                    or record.key_type != key_type
                    or cert.serial_number != serial
                    or not _issued_by(cert, self.certificate)
                    or _public_der(cert.public_key()) != _public_der(key.public_key())
                ):
                    return None
        except PkiError:
            return None
        return creds

    def _server_names(self, hostnames: Sequence[str]) -> list[x509.GeneralName]:
        if isinstance(hostnames, str) or not hostnames:
            raise PkiError("hostnames: give at least one DNS name or IP address (a list)")
        sans: list[x509.GeneralName] = []
        for name in hostnames:
            san = _parse_hostname(name)
            if san not in sans:
                sans.append(san)
        return sans

    def _issue_server(
        self,
        index: _Index,
        hostnames: Sequence[str],
        sans: list[x509.GeneralName],
        key_type: str,
        days: int,
        at: datetime,
    ) -> tuple[Path, Path]:
        first = str(sans[0].value)
        cn = first if len(first) <= 64 else "RTP Switch server"
        key = _new_key(key_type)
        serial = index.new_serial()
        cert = self._certificate(
            serial=serial,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
            key=key,
            at=at,
            days=days,
            usage=_usage(digital_signature=True, key_encipherment=key_type == "rsa"),
            purposes=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=sans,
        )
        named = self.directory / "server" / f"server-{serial}.crt"
        _atomic_write(named, _cert_pem(cert), 0o644)
        _atomic_write(self.server_key_path, _key_pem(key), 0o600)
        _atomic_write(self.server_cert_path, _cert_pem(cert), 0o644)
        index.records[serial] = self._record(cert, None, "server", named)
        return self.server_cert_path, self.server_key_path

    def _server_usable(self, index: _Index, sans: list[x509.GeneralName], at: datetime) -> bool:
        try:
            cert = _read_cert(self.server_cert_path)
            key = load_private_key(self.server_key_path)
        except PkiError:
            return False
        record = index.records.get(cert.serial_number)
        if (
            record is None
            or record.kind != "server"
            or record.status(at) is not CertStatus.VALID
            or not _issued_by(cert, self.certificate)
            or _public_der(cert.public_key()) != _public_der(key.public_key())
        ):
            return False
        try:
            have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return all(san in have for san in sans)


def _usage(
    *, digital_signature: bool, content_commitment: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _reason(reason: str) -> x509.ReasonFlags:
    """The RFC 5280 reason named `reason` (`key_compromise`, `key-compromise`, `keyCompromise`)."""
    wanted = reason.replace("-", "").replace("_", "").lower()
    for name, flag in REASONS.items():
        if name.replace("_", "") == wanted:
            return flag
    raise PkiError(f"revocation reason {reason!r} is not one of: {', '.join(REASONS)}")


@contextlib.contextmanager
def _locked(ca_dir: Path) -> Iterator[None]:
    """Hold the PKI's change lock (an flock on `ca/.lock`) for the duration."""
    with open(ca_dir / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def load_credentials(directory: Path, participant: str) -> IssuedCredentials:
    """A participant's current credentials as named by its `current.json` (no CA key needed).

    The switch loads its own signing key this way, and a participant's connector its TLS
    pair. PkiError names the participant or file when there are none.
    """
    participant = validate_participant(participant)
    directory = Path(directory)
    folder = directory / "participants" / participant
    path = folder / "current.json"
    if not path.exists():
        raise PkiError(f"participant {participant} has no credentials in {directory}")
    try:
        current = json.loads(_read_bytes(path, "current credentials"))
        tls_serial = int(current["tls_serial"])
        signing_serial = int(current["signing_serial"])
        key_type = str(current["key_type"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"{path}: unreadable ({exc})") from exc
    return IssuedCredentials(
        participant=participant,
        tls_cert=folder / "tls.crt",
        tls_key=folder / "tls.key",
        signing_cert=folder / f"signing-{signing_serial}.crt",
        signing_key=folder / f"signing-{signing_serial}.key",
        ca_cert=directory / "ca" / "ca.crt",
        signing_serial=signing_serial,
        tls_serial=tls_serial,
        key_type=key_type,
    )


# --- verifiers -----------------------------------------------------------------------------


class TrustStore:
    """What verifiers need, loaded from the PKI directory (CA cert, index of issued signing
    certs, CRL).

    The switch verifies every message's signature with the sender's signing certificates
    and asks `status` whether the one that verified may be used; a revocation or rotation
    made by the CLI is seen after `reload`. Needs no CA key. `at` should be the instant
    the switch received the message, never a time the message claims.
    """

    _CACHE_LIMIT: Final = 10_000

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._ca: x509.Certificate | None = None
        self._records: dict[int, CertRecord] = {}
        self._signing: dict[str, list[CertRecord]] = {}
        self._revoked: dict[int, datetime] = {}
        self._certs: dict[int, x509.Certificate] = {}
        self._issued: dict[bytes, bool] = {}
        self.reload()

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        """Read the trust material from `directory`; PkiError names a missing or bad file."""
        return cls(directory)

    def reload(self) -> None:
        """Re-read the CA certificate, the index and the CRL (checking the CRL's signature)."""
        ca_dir = self.directory / "ca"
        ca_cert = _read_cert(ca_dir / "ca.crt", "CA certificate")
        index = _Index.read(ca_dir / "index.json", self.directory)
        crl_path = ca_dir / "crl.pem"
        try:
            crl = x509.load_pem_x509_crl(_read_bytes(crl_path, "CRL"))
        except ValueError as exc:
            raise PkiError(f"{crl_path}: not a PEM CRL ({exc})") from exc
        ca_key = ca_cert.public_key()
        if (
            crl.issuer != ca_cert.subject
            or not isinstance(ca_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
            or not crl.is_signature_valid(ca_key)
        ):
            raise PkiError(f"{crl_path}: not signed by the scheme CA in {ca_dir / 'ca.crt'}")
        revoked: dict[int, datetime] = {}
        for entry in crl:
            record = index.records.get(entry.serial_number)
            if record is not None and record.revoked_at is None and record.retire_at is not None:
                continue  # a retirement after rotation: retire_at decides, not the CRL
            revoked[entry.serial_number] = entry.revocation_date_utc
        for serial, record in index.records.items():
            if record.revoked_at is not None:
                revoked.setdefault(serial, record.revoked_at)
        same_ca = self._ca == ca_cert
        self._ca = ca_cert
        signing: dict[str, list[CertRecord]] = {}
        for record in sorted(index.records.values(), key=lambda r: (r.not_before, r.serial)):
            if record.kind == "signing" and record.participant is not None:
                signing.setdefault(record.participant, []).append(record)
        self._records = index.records
        self._signing = signing
        self._revoked = revoked
        self._certs = {s: c for s, c in self._certs.items() if s in index.records and same_ca}
        if not same_ca:
            self._issued = {}

    @property
    def ca_certificate(self) -> x509.Certificate:
        """The scheme CA certificate every participant certificate chains to."""
        assert self._ca is not None  # set by reload() in the constructor
        return self._ca

    def record(self, serial: int) -> CertRecord | None:
        """The index entry of a serial issued by this CA, if any."""
        return self._records.get(serial)

    def signing_certificates(self, participant: str) -> list[x509.Certificate]:
        """Every signing certificate ever issued to the participant, oldest first.

        Includes revoked and expired ones, so a verifier can say which key signed; empty
        for an id this CA never issued to (or that cannot be a participant id).
        """
        if not isinstance(participant, str) or not _PARTICIPANT.fullmatch(participant):
            return []
        found = []
        for record in self._signing.get(participant.upper(), ()):
            cert = self._certs.get(record.serial)
            if cert is None:
                cert = _read_cert(record.path, f"signing certificate of {record.participant}")
                self._certs[record.serial] = cert
            found.append(cert)
        return found

    def status(self, cert: x509.Certificate, at: datetime) -> CertStatus:
        """What `cert` is worth at `at`: checks the CA signature, validity window,
        retirement after rotation, and revocation."""
        at = _instant(at)
        if not self._issued_by_ca(cert):
            return CertStatus.UNKNOWN
        serial = cert.serial_number
        if serial in self._revoked:
            return CertStatus.REVOKED
        if at < cert.not_valid_before_utc:
            return CertStatus.NOT_YET_VALID
        if at > cert.not_valid_after_utc:
            return CertStatus.EXPIRED
        record = self._records.get(serial)
        if record is not None and record.retire_at is not None and at >= record.retire_at:
            return CertStatus.EXPIRED
        return CertStatus.VALID

    def participant_of(self, cert: x509.Certificate) -> str | None:
        """The participant a certificate of this CA was issued to (None: not ours, or a
        server certificate)."""
        if not self._issued_by_ca(cert):
            return None
        record = self._records.get(cert.serial_number)
        if record is not None:
            return record.participant
        # Issued after this store was loaded: a participant certificate names its holder.
        try:
            purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return None
        if ExtendedKeyUsageOID.CLIENT_AUTH not in purposes and DOCUMENT_SIGNING not in purposes:
            return None
        cn = _common_name(cert)
        return cn if cn is not None and _PARTICIPANT.fullmatch(cn) else None

    def _issued_by_ca(self, cert: x509.Certificate) -> bool:
        key = cert.fingerprint(hashes.SHA256())
        known = self._issued.get(key)
        if known is None:
            if len(self._issued) >= self._CACHE_LIMIT:
                self._issued.clear()
            known = self._issued[key] = _issued_by(cert, self.ca_certificate)
        return known
