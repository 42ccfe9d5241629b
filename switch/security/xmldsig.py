"""XML-DSig of scheme messages: the sender signs, the receiver verifies (RULEBOOK §6).

Theory of operation. Every transport message is a `BizMsg` envelope (one AppHdr, one
Document) carrying exactly one `ds:Signature` in `AppHdr/Sgntr`. The scheme accepts one
signature profile and nothing else:

* one `ds:Reference` with `URI=""` (the whole document), transforms enveloped-signature
  then exclusive c14n 1.0 (no InclusiveNamespaces), digest SHA-256: the signature covers
  the header and the Document alike, everything in the message but itself;
* `SignedInfo` canonicalised with exclusive c14n 1.0, signed with ECDSA-SHA256 (raw r||s,
  as XML-DSig 1.1 requires) or RSA-SHA256 (PKCS#1 v1.5), as the key dictates;
* `KeyInfo/X509Data` names the signer's certificate, in full (`X509Certificate`) or by
  `X509IssuerSerial`. It only *selects* among the certificates the trust store registers
  for the sender the transport authenticated; a certificate in the message is never
  trusted on its own, and the key that verifies is the registered certificate's key.

Verification runs cheapest first, and each failure names its reason:

1. shape: the root is a `BizMsg` with exactly AppHdr then Document, there is exactly one
   `ds:Signature` in the whole tree and it is the only child of the one `AppHdr/Sgntr`,
   every element inside it is an XML-DSig element of the profile (no `ds:Object`, no
   foreign element where an unsigned copy of a Document could hide), and the message
   holds no comment (exclusive c14n drops comments, so a comment could change what a
   reader sees in a text node without changing the digest);
2. algorithms: exactly the profile above;
3. key: a certificate registered to the sender, whose status at `at` is VALID
   (REVOKED -> DS0C, EXPIRED or NOT_YET_VALID -> DS0D, UNKNOWN -> DS0B);
4. digest over the exclusive c14n of the very tree the switch goes on to process, minus
   the signature element: that is the whole message, so no other content can be what
   was signed (no signature wrapping);
5. signature value over the canonical SignedInfo with the registered key.

Any failure is a `SignatureRejected` carrying its ISO code (DS0B, DS0C or DS0D); it is a
`PeerError` of `switch.core.errors` (SignatureInvalid, KeyRevoked or KeyExpired), so the
engine answers it like any other rule of RULEBOOK §4.

Three engines compute steps 4-5 and signatures; `DEFAULT_ENGINE` picks one. "native"
(the default) canonicalises with lxml and signs and verifies with `cryptography` directly,
on the tree already parsed. "xmlsec" hands steps 4-5 and signing to libxmlsec1, the C
reference implementation of XML-DSig, through python-xmlsec: its context admits only the
profile's algorithms, its key is the registered certificate's public key, and since
URI="" is the signature's whole document, the BizMsg must be the root of its document.
"signxml" hands them to signxml and checks that what signxml says was signed is byte for
byte the canonical message.

Why native is the default: the switch verifies 2 messages and signs 3 per payment, on 2
cores. `python -m bench.signing --seconds 3` (3.5 KB pacs.008, ECDSA P-256, the engines
measured in interleaved rounds, nine runs on a shared machine) puts the xmlsec engine at
1.7-2.3x the native one per payment (sign 2.0-2.7x, verify_tree 1.4-1.9x; 1.1-1.8x with
RSA-2048): libxmlsec1 canonicalises through node sets, several times slower per byte than
lxml's c14n. signxml costs 3.4-4.2x (it re-serialises and re-parses the whole document
six times per verification and twice per signature). The tests run every engine against
every other: what one signs, each verifies, and RSA signatures are byte-identical across
the three, so the native code is held to two independent implementations of the standard.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import threading
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.exceptions import InvalidDigest, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from switch.core import errors
from switch.iso20022.build import escape
from switch.iso20022.parse import ParseLimits, parse
from switch.iso20022.registry import ENVELOPE_NS, MessageType
from switch.security.pki import CertStatus

if TYPE_CHECKING:
    import xmlsec

__all__ = [
    "DEFAULT_ENGINE",
    "DS_NS",
    "ECDSA_SHA256",
    "ENGINES",
    "EXC_C14N",
    "RSA_SHA256",
    "CertificateDirectory",
    "Engine",
    "KeyInfoForm",
    "SignatureRejected",
    "Signer",
    "SigningKeyExpired",
    "SigningKeyRevoked",
    "UnacceptableSignature",
    "Verifier",
]

DS_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED: Final = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256: Final = "http://www.w3.org/2001/04/xmlenc#sha256"
ECDSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
RSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SIGNATURE_METHODS: Final = frozenset({ECDSA_SHA256, RSA_SHA256})
"""The signature methods the scheme accepts (RULEBOOK §6)."""

MIN_RSA_BITS: Final = 2048
_LIMITS: Final = ParseLimits()

Engine = Literal["native", "xmlsec", "signxml"]
"""Which implementation canonicalises, digests and signs/verifies (see the module doc)."""
ENGINES: Final[tuple[Engine, ...]] = get_args(Engine)
DEFAULT_ENGINE: Final[Engine] = "native"
"""The engine `Signer` and `Verifier` use unless told otherwise."""
KeyInfoForm = Literal["certificate", "issuer-serial"]
"""How the signer names its certificate in KeyInfo: the whole certificate, or issuer+serial."""

_HEAD_NS: Final = MessageType.HEAD_001.namespace
_BIZMSG: Final = f"{{{ENVELOPE_NS}}}BizMsg"
_APPHDR: Final = f"{{{_HEAD_NS}}}AppHdr"
_SGNTR: Final = f"{{{_HEAD_NS}}}Sgntr"
_RLTD: Final = f"{{{_HEAD_NS}}}Rltd"
_FIELD: Final = "/BizMsg/AppHdr/Sgntr"


_DS_PREFIX: Final = f"{{{DS_NS}}}"


def _ds(local: str) -> str:
    return _DS_PREFIX + local


_SIGNATURE: Final = _ds("Signature")
_SIGNED_INFO: Final = _ds("SignedInfo")
_SIGNATURE_VALUE: Final = _ds("SignatureValue")
_KEY_INFO: Final = _ds("KeyInfo")
_C14N_METHOD: Final = _ds("CanonicalizationMethod")
_SIGNATURE_METHOD: Final = _ds("SignatureMethod")
_REFERENCE: Final = _ds("Reference")
_TRANSFORMS: Final = _ds("Transforms")
_TRANSFORM: Final = _ds("Transform")
_DIGEST_METHOD: Final = _ds("DigestMethod")
_DIGEST_VALUE: Final = _ds("DigestValue")
_X509_DATA: Final = _ds("X509Data")
_X509_CERTIFICATE: Final = _ds("X509Certificate")
_X509_ISSUER_SERIAL: Final = _ds("X509IssuerSerial")
_X509_ISSUER_NAME: Final = _ds("X509IssuerName")
_X509_SERIAL_NUMBER: Final = _ds("X509SerialNumber")


# --- rejections --------------------------------------------------------------------------


class SignatureRejected(errors.PeerError):
    """A message whose signature the scheme refuses; `code` is DS0B, DS0C or DS0D.

    `str(e)` is the specific reason (e.g. "digest mismatch"). Raised as one of the three
    subclasses below, each also the `switch.core.errors` peer error of its code.
    """

    @property
    def code(self) -> str:
        """The ISO reason code the message is rejected with."""
        return self.reason


class UnacceptableSignature(SignatureRejected, errors.SignatureInvalid):
    """DS0B: the signature is missing or invalid, or the key is not the sender's."""


class SigningKeyRevoked(SignatureRejected, errors.KeyRevoked):
    """DS0C: the signing certificate is revoked."""


class SigningKeyExpired(SignatureRejected, errors.KeyExpired):
    """DS0D: the signing certificate is expired (or retired, or not yet valid)."""


def _reject(text: str) -> UnacceptableSignature:
    return UnacceptableSignature(text, field=_FIELD)


class CertificateDirectory(Protocol):
    """Where verifiers find participants' signing certificates (`pki.TrustStore`)."""

    def signing_certificates(self, participant: str) -> list[x509.Certificate]:
        """Every signing certificate registered to `participant` (revoked/expired included)."""
        ...

    def status(self, cert: x509.Certificate, at: datetime) -> CertStatus:
        """What `cert` is worth at `at`."""
        ...


# --- parsing helpers ---------------------------------------------------------------------

_local = threading.local()


def _fragment_parser() -> etree.XMLParser:
    """A hardened parser for the signature fragments this module writes itself."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, collect_ids=False
        )
        _local.parser = parser
    return parser


def _c14n(el: etree._Element) -> bytes:
    """Exclusive XML canonicalisation 1.0 without comments of `el`'s subtree."""
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False)


def _b64(text: str | None, what: str) -> bytes:
    try:
        return b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _reject(f"{what} is not base64") from None


def _name(el: etree._Element) -> str:
    q = etree.QName(el)
    return f"ds:{q.localname}" if q.namespace == DS_NS else f"{{{q.namespace}}}{q.localname}"


def _children(el: etree._Element, *expected: str, optional: int = 0) -> list[etree._Element]:
    """The element children of `el`, which must be `expected` in order (the last
    `optional` of them may be missing)."""
    found = list(el)
    tags = [c.tag for c in found]
    if tags != list(expected[: len(tags)]) or len(tags) < len(expected) - optional:
        shown = ", ".join(_name(c) for c in found) or "nothing"
        want = ", ".join("ds:" + etree.QName(t).localname for t in expected)
        raise _reject(f"{_name(el)} holds {shown}; the scheme's profile is {want}")
    return found


def _algorithm(el: etree._Element, allowed: frozenset[str] | str) -> str:
    algorithm = el.get("Algorithm") or ""
    accepted = {allowed} if isinstance(allowed, str) else allowed
    if algorithm not in accepted:
        raise _reject(
            f"{_name(el)} {algorithm or '(none)'} not accepted (the scheme's profile: "
            f"{', '.join(sorted(accepted))})"
        )
    if len(el):
        raise _reject(f"{_name(el)} {algorithm} must have no parameters")
    return algorithm


@dataclass(frozen=True, slots=True)
class _Signature:
    """The parts of a `ds:Signature` that follows the scheme's profile."""

    element: etree._Element
    signed_info: etree._Element
    method: str
    digest: bytes
    value: bytes
    certificates: tuple[bytes, ...]
    issuer_serial: tuple[str, int] | None


def _locate(root: etree._Element) -> etree._Element:
    """The one `ds:Signature` of a BizMsg, in `AppHdr/Sgntr`; DS0B for any other shape."""
    if root.tag != _BIZMSG or root.getparent() is not None:
        raise _reject("not a BizMsg envelope: no AppHdr/Sgntr")
    parts = [c for c in root if isinstance(c.tag, str)]
    if len(parts) != 2 or parts[0].tag != _APPHDR or etree.QName(parts[1]).localname != "Document":
        raise _reject("BizMsg must hold exactly one AppHdr followed by one Document")
    for node in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(node, etree._ProcessingInstruction):
            raise _reject("processing instruction outside BizMsg")
    if next(root.iter(etree.Comment), None) is not None:
        raise _reject("comment inside the message: comments are not covered by the signature")
    signatures = list(root.iter(_SIGNATURE))
    if not signatures:
        raise _reject("no signature in AppHdr/Sgntr")
    if len(signatures) > 1:
        raise _reject(f"{len(signatures)} ds:Signature elements; exactly one is allowed")
    sig = signatures[0]
    envelopes = parts[0].findall(_SGNTR)
    if len(envelopes) != 1 or sig.getparent() is not envelopes[0]:
        raise _reject("ds:Signature is not the signature of AppHdr/Sgntr")
    sgntr = envelopes[0]
    if len(sgntr) != 1 or (sgntr.text or "").strip() or (sig.tail or "").strip():
        raise _reject("AppHdr/Sgntr must hold the ds:Signature and nothing else")
    return sig


def _read(sig: etree._Element) -> _Signature:
    """The scheme's profile of `sig`, or DS0B naming the first departure from it."""
    for el in sig.iter():
        tag = el.tag
        if not isinstance(tag, str) or not tag.startswith(_DS_PREFIX):
            shown = _name(el) if isinstance(tag, str) else "a processing instruction"
            raise _reject(f"{shown} inside ds:Signature is not allowed by the scheme's profile")
    si, sv, *ki = _children(sig, _SIGNED_INFO, _SIGNATURE_VALUE, _KEY_INFO, optional=1)
    cm, sm, ref = _children(si, _C14N_METHOD, _SIGNATURE_METHOD, _REFERENCE)
    _algorithm(cm, EXC_C14N)
    method = _algorithm(sm, SIGNATURE_METHODS)
    if ref.get("URI") != "":
        raise _reject(f'ds:Reference URI={ref.get("URI")!r}: only URI="" (the whole message)')
    transforms, dm, dv = _children(ref, _TRANSFORMS, _DIGEST_METHOD, _DIGEST_VALUE)
    steps = _children(transforms, _TRANSFORM, _TRANSFORM)
    _algorithm(steps[0], ENVELOPED)
    _algorithm(steps[1], EXC_C14N)
    _algorithm(dm, SHA256)
    digest = _b64(dv.text, "DigestValue")
    if len(digest) != hashlib.sha256().digest_size:
        raise _reject("DigestValue is not a SHA-256 digest")
    value = _b64(sv.text, "SignatureValue")
    if not ki:
        raise _reject("no ds:KeyInfo: the signature does not say which certificate signed")
    (data,) = _children(ki[0], _X509_DATA)
    certificates: list[bytes] = []
    issuer_serial: tuple[str, int] | None = None
    for item in data:
        if item.tag == _X509_CERTIFICATE:
            certificates.append(_b64(item.text, "X509Certificate"))
        elif item.tag == _X509_ISSUER_SERIAL and issuer_serial is None:
            name, number = _children(item, _X509_ISSUER_NAME, _X509_SERIAL_NUMBER)
            try:
                issuer_serial = ((name.text or "").strip(), int((number.text or "").strip()))
            except ValueError:
                raise _reject("X509SerialNumber is not an integer") from None
        else:
            raise _reject(f"{_name(item)} in ds:X509Data is not allowed by the scheme's profile")
    if not certificates and issuer_serial is None:
        raise _reject("ds:X509Data names no certificate")
    return _Signature(
        element=sig,
        signed_info=si,
        method=method,
        digest=digest,
        value=value,
        certificates=tuple(certificates),
        issuer_serial=issuer_serial,
    )


def _same_issuer(cert: x509.Certificate, text: str) -> bool:
    try:
        named = x509.Name.from_rfc4514_string(text).rfc4514_string()
    except ValueError:
        named = text
    return cert.issuer.rfc4514_string() == named


def _signed_octets(root: etree._Element, sig: etree._Element) -> bytes:
    """The octets an enveloped, exclusive-c14n signature covers: the canonical message
    without the signature element (its tail text stays, as the transform requires).

    Exclusive c14n renders a subtree the same wherever it stands, so the canonical
    signature is cut out of the canonical message rather than out of a copied tree.
    """
    whole = _c14n(root)
    part = _c14n(sig)
    at = whole.find(part)
    if at < 0 or whole.find(part, at + 1) >= 0:
        raise _reject("cannot isolate ds:Signature in the canonical message")
    return whole[:at] + whole[at + len(part) :]


def _verify_value(method: str, key: object, value: bytes, signed_info: bytes, serial: int) -> None:
    """Check the SignatureValue over the canonical SignedInfo with a registered key."""
    try:
        if method == ECDSA_SHA256 and isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                raise InvalidSignature
            der = encode_dss_signature(
                int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big")
            )
            key.verify(der, signed_info, ec.ECDSA(hashes.SHA256()))
        elif method == RSA_SHA256 and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, signed_info, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise _reject(f"signature method {method} does not fit the key of 0x{serial:x}")
    except InvalidSignature:
        raise _reject(f"signature value does not verify with certificate 0x{serial:x}") from None


# --- the xmlsec engine -------------------------------------------------------------------
#
# xmlsec is imported only where this engine runs. It works on lxml's very trees with its
# own copy of libxml2, so the two must be the same libxml2 version: xmlsec refuses to
# import beside another libxml2 series (it compares major.minor only), pyproject pins
# versions that match exactly, and a test checks it. None of that concerns the others.


def _xmlsec_context(key: xmlsec.Key) -> xmlsec.SignatureContext:
    """A one-use xmlsec context holding `key` (a copy), limited to the profile's
    algorithms: a second line behind `_read`, xmlsec refuses any other transform."""
    import xmlsec

    t = xmlsec.constants
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    for transform in (t.TransformExclC14N, t.TransformEcdsaSha256, t.TransformRsaSha256):
        ctx.enable_signature_transform(transform)
    for transform in (t.TransformEnveloped, t.TransformExclC14N, t.TransformSha256):
        ctx.enable_reference_transform(transform)
    return ctx


@dataclass(frozen=True, slots=True)
class _PublicKey:
    """A registered certificate's public key, as xmlsec and as the profile see it."""

    key: xmlsec.Key
    method: str


@functools.lru_cache(maxsize=1024)
def _public_key(cert: x509.Certificate) -> _PublicKey:
    """The xmlsec key of a registered certificate's public key (never KeyInfo's)."""
    import xmlsec

    public = cert.public_key()
    method = (
        ECDSA_SHA256
        if isinstance(public, ec.EllipticCurvePublicKey)
        else RSA_SHA256
        if isinstance(public, rsa.RSAPublicKey)
        else ""
    )
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return _PublicKey(xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem), method)


# --- signing -----------------------------------------------------------------------------

_SIGNED_INFO_HEAD: Final = (
    f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"></ds:CanonicalizationMethod>'
    '<ds:SignatureMethod Algorithm="{method}"></ds:SignatureMethod>'
    '<ds:Reference URI=""><ds:Transforms>'
    f'<ds:Transform Algorithm="{ENVELOPED}"></ds:Transform>'
    f'<ds:Transform Algorithm="{EXC_C14N}"></ds:Transform>'
    f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
    "<ds:DigestValue>"
)
_SIGNED_INFO_TAIL: Final = "</ds:DigestValue></ds:Reference></ds:SignedInfo>"
_XMLNS_DS: Final = f' xmlns:ds="{DS_NS}"'


def _insert_sgntr(header: etree._Element) -> etree._Element:
    """A new empty `Sgntr` in `header`, where head.001.001.02 wants it: after `Prty` and
    every other element but `Rltd`."""
    sgntr = etree.Element(_SGNTR)
    nodes = list(header)
    index = next((i for i, n in enumerate(nodes) if n.tag == _RLTD), len(nodes))
    header.insert(index, sgntr)
    if index:  # keep a pretty-printed header pretty
        before = nodes[index - 1]
        indent = nodes[index - 2].tail if index >= 2 else header.text
        if (before.tail or "x").isspace() and (indent or "x").isspace():
            sgntr.tail, before.tail = before.tail, indent
    return sgntr


class Signer:
    """Signs business messages with one participant's (or the switch's) signing key."""

    def __init__(
        self,
        private_key_pem: bytes,
        certificate_pem: bytes,
        *,
        key_info: KeyInfoForm = "certificate",
        engine: Engine = DEFAULT_ENGINE,
    ) -> None:
        key = load_pem_private_key(private_key_pem, password=None)
        cert = x509.load_pem_x509_certificate(certificate_pem)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self._method = ECDSA_SHA256
            self._ec_size = (key.curve.key_size + 7) // 8
        elif isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key of {key.key_size} bits: at least {MIN_RSA_BITS}")
            self._method = RSA_SHA256
            self._ec_size = 0
        else:
            raise ValueError("signing key must be ECDSA or RSA")
        if cert.public_key() != key.public_key():
            raise ValueError("certificate does not match the private key")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}")
        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = key
        self._cert = cert
        self._engine = engine
        if key_info == "certificate":
            der = b64encode(cert.public_bytes(Encoding.DER)).decode()
            inner = f"<ds:X509Certificate>{der}</ds:X509Certificate>"
        elif key_info == "issuer-serial":
            inner = (
                "<ds:X509IssuerSerial><ds:X509IssuerName>"
                f"{escape(cert.issuer.rfc4514_string())}</ds:X509IssuerName>"
                f"<ds:X509SerialNumber>{cert.serial_number}</ds:X509SerialNumber>"
                "</ds:X509IssuerSerial>"
            )
        else:
            raise ValueError(f"unknown KeyInfo form {key_info!r}")
        self._key_info = f"<ds:KeyInfo><ds:X509Data>{inner}</ds:X509Data></ds:KeyInfo>"
        self._head = _SIGNED_INFO_HEAD.replace("{method}", self._method)
        self._xmlsec_key: xmlsec.Key | None = None
        if engine == "xmlsec":
            import xmlsec

            self._xmlsec_key = xmlsec.Key.from_memory(
                private_key_pem, xmlsec.constants.KeyDataFormatPem
            )

    @classmethod
    def from_files(
        cls,
        key_path: Path,
        cert_path: Path,
        *,
        key_info: KeyInfoForm = "certificate",
        engine: Engine = DEFAULT_ENGINE,
    ) -> Signer:
        """A signer from a PEM private key file and its PEM certificate file."""
        return cls(
            Path(key_path).read_bytes(),
            Path(cert_path).read_bytes(),
            key_info=key_info,
            engine=engine,
        )

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate the signatures name."""
        return self._cert

    @property
    def signature_method(self) -> str:
        """The XML-DSig SignatureMethod URI this signer uses."""
        return self._method

    def sign(self, message: bytes, *, limits: ParseLimits = _LIMITS) -> bytes:
        """`message`, a BizMsg without `Sgntr`, with `AppHdr/Sgntr/ds:Signature` inserted.

        The result is UTF-8 without an XML declaration. Raises UnusableMessage (from
        `switch.iso20022.parse`) for input that is not a scheme message, ValueError for
        one that cannot be signed (no envelope, already signed, carrying comments).
        """
        msg = parse(message, limits)
        header = msg.header
        if header is None or msg.document is None:
            raise ValueError("only a BizMsg envelope (AppHdr and Document) can be signed")
        root = header.getparent()
        assert root is not None
        if header.find(_SGNTR) is not None:
            raise ValueError("message already carries AppHdr/Sgntr")
        if next(root.iter(etree.Comment), None) is not None:
            raise ValueError("message carries comments, which a signature does not cover")
        sgntr = _insert_sgntr(header)
        if self._xmlsec_key is not None:
            self._sign_with_xmlsec(sgntr, self._xmlsec_key)
        elif self._engine == "signxml":
            root = self._sign_with_signxml(root, sgntr)
        else:
            sgntr.append(self._signature(_c14n(root)))
        return etree.tostring(root, encoding="UTF-8")

    def _signature(self, octets: bytes) -> etree._Element:
        """The `ds:Signature` over `octets`, the canonical message with an empty Sgntr."""
        text = self.signature_over(hashlib.sha256(octets).digest())
        return etree.fromstring(text, _fragment_parser())

    def signature_over(self, digest: bytes) -> bytes:
        """The serialised `ds:Signature` (the scheme's profile, native engine) of a message
        whose canonical form, with an empty `AppHdr/Sgntr`, has SHA-256 `digest`.

        For messages too large to sign as a tree (`switch.security.filesig` streams the
        canonical form through the hash): the caller puts the result inside the empty
        `Sgntr` it digested.
        """
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError("digest must be a SHA-256 digest")
        body = self._head + b64encode(digest).decode() + _SIGNED_INFO_TAIL
        value = b64encode(self._sign_octets(f"<ds:SignedInfo{_XMLNS_DS}>{body}".encode()))
        text = (
            f"<ds:Signature{_XMLNS_DS}><ds:SignedInfo>{body}"
            f"<ds:SignatureValue>{value.decode()}</ds:SignatureValue>"
            f"{self._key_info}</ds:Signature>"
        )
        return text.encode()

    def _sign_octets(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(self._ec_size, "big") + s.to_bytes(self._ec_size, "big")
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _sign_with_xmlsec(self, sgntr: etree._Element, key: xmlsec.Key) -> None:
        """xmlsec fills in DigestValue and SignatureValue of the profile's template."""
        template = (
            f"<ds:Signature{_XMLNS_DS}><ds:SignedInfo>{self._head}{_SIGNED_INFO_TAIL}"
            f"<ds:SignatureValue></ds:SignatureValue>{self._key_info}</ds:Signature>"
        )
        sig = etree.fromstring(template, _fragment_parser())
        sgntr.append(sig)
        _xmlsec_context(key).sign(sig)
        value = sig[1]  # xmlsec breaks base64 into lines of 64: write it as the others do
        value.text = "".join((value.text or "").split())

    def _sign_with_signxml(self, root: etree._Element, sgntr: etree._Element) -> etree._Element:
        etree.SubElement(sgntr, _SIGNATURE, nsmap={"ds": DS_NS}, Id="placeholder")
        signer = XMLSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=SignatureMethod(self._method),
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        key_info = etree.fromstring(
            self._key_info.replace("<ds:KeyInfo>", f"<ds:KeyInfo{_XMLNS_DS}>", 1),
            _fragment_parser(),
        )
        signed: etree._Element = signer.sign(root, key=self._key, key_info=key_info)
        return signed


# --- verification ------------------------------------------------------------------------


class Verifier:
    """Verifies messages against the certificates a directory registers to their sender."""

    def __init__(self, directory: CertificateDirectory, *, engine: Engine = DEFAULT_ENGINE) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}")
        if engine == "xmlsec":
            import xmlsec  # noqa: F401 (fail here, not at the first message)
        self._directory = directory
        self._engine = engine

    def verify(
        self,
        message: bytes,
        sender: str,
        *,
        at: datetime | None = None,
        limits: ParseLimits = _LIMITS,
    ) -> None:
        """Accept `message` from `sender` (the participant the transport authenticated)
        or raise SignatureRejected.

        Bytes that are no scheme message at all raise UnusableMessage, as `parse` does.
        """
        msg = parse(message, limits)
        root = msg.header.getparent() if msg.header is not None else None
        if root is None:
            raise _reject("not a BizMsg envelope: no AppHdr/Sgntr")
        self.verify_tree(root, sender, at=at)

    def verify_tree(self, root: etree._Element, sender: str, *, at: datetime | None = None) -> None:
        """`verify` on a message already parsed: `root` is the BizMsg the switch goes on
        to process. `at` (default now) is when the switch received it."""
        when = datetime.now(UTC) if at is None else at
        if when.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        sig = _read(_locate(root))
        cert = self._registered(sig, sender)
        self._check_status(cert, when, sender)
        if self._engine == "xmlsec":
            self._verify_with_xmlsec(root, sig, cert)
            return
        if self._engine == "signxml":
            self._verify_with_signxml(root, sig, cert, when)
            return
        octets = _signed_octets(root, sig.element)
        if not hmac.compare_digest(hashlib.sha256(octets).digest(), sig.digest):
            raise _reject("digest mismatch: the message is not what was signed")
        _verify_value(
            sig.method, cert.public_key(), sig.value, _c14n(sig.signed_info), cert.serial_number
        )

    def verify_detached(
        self, signature: etree._Element, digest: bytes, sender: str, *, at: datetime
    ) -> None:
        """Steps 2-5 of verification for a message read as a stream rather than a tree.

        `signature` is the message's one `ds:Signature` (a copy of it, parsed on its own)
        and `digest` the SHA-256 of the message's canonical form without it, both taken
        by the caller from the very bytes it goes on to process (step 1, the message's
        shape, is the caller's too: see `switch.security.filesig`). Raises
        SignatureRejected like `verify_tree`.
        """
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        if signature.tag != _SIGNATURE:
            raise _reject("no signature in AppHdr/Sgntr")
        sig = _read(signature)
        cert = self._registered(sig, sender)
        self._check_status(cert, at, sender)
        if not hmac.compare_digest(digest, sig.digest):
            raise _reject("digest mismatch: the message is not what was signed")
        _verify_value(
            sig.method, cert.public_key(), sig.value, _c14n(sig.signed_info), cert.serial_number
        )

    def _registered(self, sig: _Signature, sender: str) -> x509.Certificate:
        """The sender's registered certificate that KeyInfo names."""
        registered = self._directory.signing_certificates(sender)
        if sig.certificates:
            named = set(sig.certificates)
            for cert in registered:
                if cert.public_bytes(Encoding.DER) in named:
                    return cert
        elif sig.issuer_serial is not None:
            issuer, serial = sig.issuer_serial
            for cert in registered:
                if cert.serial_number == serial and _same_issuer(cert, issuer):
                    return cert
        raise _reject(f"signed by a key not registered to {sender}")

    def _check_status(self, cert: x509.Certificate, at: datetime, sender: str) -> None:
        status = self._directory.status(cert, at)
        if status is CertStatus.VALID:
            return
        serial = f"0x{cert.serial_number:x}"
        if status is CertStatus.REVOKED:
            raise SigningKeyRevoked(f"certificate {serial} of {sender} revoked", field=_FIELD)
        if status is CertStatus.EXPIRED:
            end = cert.not_valid_after_utc
            when = f"at {end.isoformat()}" if at > end else "(retired after a key rotation)"
            raise SigningKeyExpired(f"certificate {serial} expired {when}", field=_FIELD)
        if status is CertStatus.NOT_YET_VALID:
            start = cert.not_valid_before_utc.isoformat()
            raise SigningKeyExpired(f"certificate {serial} not valid before {start}", field=_FIELD)
        raise _reject(f"certificate {serial} is not a certificate of the scheme CA")

    def _verify_with_signxml(
        self, root: etree._Element, sig: _Signature, cert: x509.Certificate, at: datetime
    ) -> None:
        config = SignatureConfiguration(
            require_x509=True,
            location=f"./{_APPHDR}/{_SGNTR}/",
            expect_references=1,
            signature_methods=frozenset({SignatureMethod(m) for m in SIGNATURE_METHODS}),
            digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
            verification_time=at,
        )
        try:
            # A new XMLVerifier per call: verify() keeps its state on the instance.
            result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
        except InvalidDigest:
            raise _reject("digest mismatch: the message is not what was signed") from None
        except (SignXMLException, etree.DocumentInvalid, ValueError) as exc:
            raise _reject(f"signature does not verify: {exc}") from None
        if isinstance(result, list) or result.signed_data != _signed_octets(root, sig.element):
            raise _reject("what the signature covers is not the message")

    def _verify_with_xmlsec(
        self, root: etree._Element, sig: _Signature, cert: x509.Certificate
    ) -> None:
        import xmlsec

        # URI="" is the whole document of the signature: it must be the tree the switch
        # processes, not a document this element was taken out of.
        if root.getroottree().getroot() is not root:
            raise _reject("the BizMsg is not the root of its document")
        public = _public_key(cert)
        serial = cert.serial_number
        if sig.method != public.method:
            raise _reject(f"signature method {sig.method} does not fit the key of 0x{serial:x}")
        try:
            _xmlsec_context(public.key).verify(sig.element)
        except xmlsec.Error:
            # xmlsec does not say which check failed: tell the sender which one did.
            octets = _signed_octets(root, sig.element)
            if not hmac.compare_digest(hashlib.sha256(octets).digest(), sig.digest):
                raise _reject("digest mismatch: the message is not what was signed") from None
            raise _reject(
                f"signature value does not verify with certificate 0x{serial:x}"
            ) from None
