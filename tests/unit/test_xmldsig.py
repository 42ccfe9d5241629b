"""XML-DSig of business messages: sign, verify, and every way a signature is refused.

Theory: a small in-test PKI (a scheme CA, signing certificates for two banks, one of them
also with an RSA key, plus revoked, expired, not-yet-valid and rogue certificates) and an
in-memory certificate directory stand in for `pki.TrustStore` (one test uses the real
one). Each attack starts from a correctly signed message, changes one thing, and expects
the exact ISO code and the reason. Every engine is exercised, and each must accept what
each other one signs: xmlsec (libxmlsec1) and signxml are independent XML-DSig
implementations, so the native engine is checked against two others and they against it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import CanonicalizationMethod
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from switch.core import errors
from switch.iso20022 import ENVELOPE_NS, BadEnvelope, NotWellFormed, parse, validate
from switch.security import xmldsig
from switch.security.pki import CertStatus, SchemeCA, TrustStore
from switch.security.xmldsig import (
    DEFAULT_ENGINE,
    DS_NS,
    ECDSA_SHA256,
    RSA_SHA256,
    CertificateDirectory,
    Engine,
    KeyInfoForm,
    SignatureRejected,
    Signer,
    Verifier,
)
from tests.oracle import base_errors

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.xml"))
PACS008 = (REPO / "examples" / "pacs.008-bicfi.xml").read_bytes()
HEAD = "urn:iso:std:iso:20022:tech:xsd:head.001.001.02"
NS = {
    "b": ENVELOPE_NS,
    "h": HEAD,
    "d": "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08",
    "ds": DS_NS,
}
A = "BNKAUS33XXX"
B = "BNKBUS33XXX"
NOW = datetime.now(UTC)
ENGINES: list[Engine] = list(xmldsig.ENGINES)

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --- a small PKI and directory -----------------------------------------------------------


@dataclass
class Credential:
    key: Key
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def signer(self, **kw: Any) -> Signer:
        return Signer(self.key_pem, self.cert_pem, **kw)


def _certificate(
    subject: str,
    key: Key,
    issuer: x509.Name,
    issuer_key: Key,
    *,
    start: timedelta = timedelta(days=-1),
    end: timedelta = timedelta(days=365),
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + start)
        .not_valid_after(NOW + end)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class Directory:
    """What a trust store answers: certificates per participant, revocations, and UNKNOWN
    for a certificate the scheme CA did not issue."""

    ca: x509.Name
    certs: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)

    def signing_certificates(self, participant: str) -> list[x509.Certificate]:
        return list(self.certs.get(participant, []))

    def status(self, cert: x509.Certificate, at: datetime) -> CertStatus:
        if cert.issuer != self.ca:
            return CertStatus.UNKNOWN
        if cert.serial_number in self.revoked:
            return CertStatus.REVOKED
        if at < cert.not_valid_before_utc:
            return CertStatus.NOT_YET_VALID
        if at > cert.not_valid_after_utc:
            return CertStatus.EXPIRED
        return CertStatus.VALID


@dataclass
class Pki:
    a_ec: Credential
    a_rsa: Credential
    b_ec: Credential
    a_revoked: Credential
    a_expired: Credential
    a_future: Credential
    rogue: Credential  # self-signed, CN = A, registered nowhere
    directory: Directory


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Scheme CA")])

    def issue(subject: str, key: Key | None = None, **window: timedelta) -> Credential:
        key = key or ec.generate_private_key(ec.SECP256R1())
        return Credential(key, _certificate(subject, key, ca_name, ca_key, **window))

    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_cert = _certificate(A, rogue_key, x509.Name([]), rogue_key)
    rogue = Credential(rogue_key, rogue_cert)
    p = Pki(
        a_ec=issue(A),
        a_rsa=issue(A, rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        b_ec=issue(B),
        a_revoked=issue(A),
        a_expired=issue(A, start=timedelta(days=-400), end=timedelta(days=-1)),
        a_future=issue(A, start=timedelta(days=1), end=timedelta(days=30)),
        rogue=rogue,
        directory=Directory(ca=ca_name),
    )
    p.directory.certs = {
        A: [c.cert for c in (p.a_ec, p.a_rsa, p.a_revoked, p.a_expired, p.a_future)],
        B: [p.b_ec.cert],
    }
    p.directory.revoked = {p.a_revoked.cert.serial_number}
    return p


# --- helpers -----------------------------------------------------------------------------


def tree(message: bytes) -> etree._Element:
    return etree.fromstring(message)


def mutate(message: bytes, change: Callable[[etree._Element], object]) -> bytes:
    root = tree(message)
    change(root)
    return etree.tostring(root, encoding="UTF-8")


def one(root: etree._Element, path: str) -> etree._Element:
    found = root.find(path, NS)
    assert found is not None, path
    return found


def rejected(
    pki: Pki,
    message: bytes | etree._Element,
    *,
    sender: str = A,
    engine: Engine = DEFAULT_ENGINE,
    at: datetime | None = None,
) -> SignatureRejected:
    verifier = Verifier(pki.directory, engine=engine)
    with pytest.raises(SignatureRejected) as caught:
        if isinstance(message, bytes):
            verifier.verify(message, sender, at=at)
        else:
            verifier.verify_tree(message, sender, at=at)
    return caught.value


def header_tags(message: bytes) -> list[str]:
    return [etree.QName(c).localname for c in one(tree(message), "h:AppHdr")]


# --- signing and verifying ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["a_ec", "a_rsa"])
@pytest.mark.parametrize("sign_engine", ENGINES)
@pytest.mark.parametrize("verify_engine", ENGINES)
def test_round_trip(pki: Pki, key: str, sign_engine: Engine, verify_engine: Engine) -> None:
    cred: Credential = getattr(pki, key)
    signed = cred.signer(engine=sign_engine).sign(PACS008)
    Verifier(pki.directory, engine=verify_engine).verify(signed, A)
    root = tree(signed)
    method = one(root, "h:AppHdr/h:Sgntr/ds:Signature/ds:SignedInfo/ds:SignatureMethod")
    assert method.get("Algorithm") == (ECDSA_SHA256 if key == "a_ec" else RSA_SHA256)
    Verifier(pki.directory, engine=verify_engine).verify_tree(root, A)


@pytest.mark.parametrize("engine", ENGINES)
def test_issuer_serial_key_info(pki: Pki, engine: Engine) -> None:
    signed = pki.a_ec.signer(key_info="issuer-serial", engine=engine).sign(PACS008)
    data = one(tree(signed), "h:AppHdr/h:Sgntr/ds:Signature/ds:KeyInfo/ds:X509Data")
    assert [etree.QName(c).localname for c in data] == ["X509IssuerSerial"]
    for verify_engine in ENGINES:
        Verifier(pki.directory, engine=verify_engine).verify(signed, A)


@pytest.mark.parametrize("key_info", ["certificate", "issuer-serial"])
def test_engines_write_the_same_signature(pki: Pki, key_info: KeyInfoForm) -> None:
    """RSA PKCS#1 v1.5 is deterministic: every engine must produce identical bytes."""
    signed = {e: pki.a_rsa.signer(engine=e, key_info=key_info).sign(PACS008) for e in ENGINES}
    assert len(set(signed.values())) == 1, [e for e in ENGINES if signed[e] != signed["native"]]


def test_lxml_and_xmlsec_share_one_libxml2() -> None:
    """xmlsec works on lxml's trees with its own copy of libxml2: the two must be the
    same version (pyproject pins xmlsec and the lxml series that bundles it)."""
    advice = "pin lxml and xmlsec in pyproject.toml to versions bundling the same libxml2"
    lxml_side = f"lxml {etree.__version__} runs libxml2 {etree.LIBXML_VERSION}"
    try:
        import xmlsec
    except Exception as exc:  # xmlsec refuses to load beside another libxml2 series
        pytest.fail(f"xmlsec does not load: {exc}; {lxml_side}: {advice}")
    assert xmlsec.get_libxml_version() == etree.LIBXML_VERSION, (
        f"{lxml_side} but xmlsec was built with {xmlsec.get_libxml_version()}: {advice}"
    )


def test_signature_is_last_in_header_and_schema_valid(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)
    assert header_tags(signed)[-2:] == ["CreDt", "Sgntr"]
    sgntr = one(tree(signed), "h:AppHdr/h:Sgntr")
    assert [etree.QName(c).text for c in sgntr] == [f"{{{DS_NS}}}Signature"]
    assert validate(parse(signed)) == []
    assert base_errors(signed) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
@pytest.mark.parametrize("engine", ENGINES)
def test_every_example_signs_into_valid_messages(pki: Pki, path: Path, engine: Engine) -> None:
    for cred in (pki.a_ec, pki.a_rsa):
        signed = cred.signer(engine=engine).sign(path.read_bytes())
        assert validate(parse(signed)) == [], path.name
        assert base_errors(signed) == [], path.name
        Verifier(pki.directory, engine=engine).verify(signed, A)


def test_sgntr_goes_after_prty_and_before_rltd(pki: Pki) -> None:
    """head.001.001.02: ... CreDt, BizPrcgDt?, CpyDplct?, PssblDplct?, Prty?, Sgntr?, Rltd*."""

    def add_prty_and_rltd(root: etree._Element) -> None:
        hdr = one(root, "h:AppHdr")
        prty = etree.SubElement(hdr, f"{{{HEAD}}}Prty")
        prty.text = "NORM"
        rltd = etree.SubElement(hdr, f"{{{HEAD}}}Rltd")
        for tag in ("Fr", "To", "BizMsgIdr", "MsgDefIdr", "CreDt"):
            rltd.append(copy.deepcopy(one(hdr, f"h:{tag}")))

    message = mutate(PACS008, add_prty_and_rltd)
    assert validate(parse(message)) == []
    signed = pki.a_ec.signer().sign(message)
    assert header_tags(signed)[-3:] == ["Prty", "Sgntr", "Rltd"]
    assert validate(parse(signed)) == []
    assert base_errors(signed) == []
    Verifier(pki.directory).verify(signed, A)


def test_verify_at_an_instant(pki: Pki) -> None:
    """`at` decides validity: an expired key verifies at an instant it was valid."""
    signed = pki.a_expired.signer().sign(PACS008)
    Verifier(pki.directory).verify(signed, A, at=NOW - timedelta(days=30))
    assert rejected(pki, signed).code == "DS0D"
    with pytest.raises(ValueError, match="timezone"):
        Verifier(pki.directory).verify(signed, A, at=datetime(2026, 1, 1))


# --- DS0B: missing, invalid, or not the sender's key --------------------------------------


def test_unsigned_message(pki: Pki) -> None:
    e = rejected(pki, PACS008)
    assert e.code == "DS0B"
    assert str(e) == "no signature in AppHdr/Sgntr"
    assert isinstance(e, errors.SignatureInvalid)
    assert e.reason == "DS0B"
    assert e.field == "/BizMsg/AppHdr/Sgntr"


def test_empty_sgntr(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)
    emptied = mutate(signed, lambda r: one(r, "h:AppHdr/h:Sgntr").remove(one(r, ".//ds:Signature")))
    assert str(rejected(pki, emptied)) == "no signature in AppHdr/Sgntr"


@pytest.mark.parametrize("engine", ENGINES)
def test_tampered_amount(pki: Pki, engine: Engine) -> None:
    signed = pki.a_ec.signer().sign(PACS008)

    def raise_amount(root: etree._Element) -> None:
        one(root, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt").text = "12500.00"

    e = rejected(pki, mutate(signed, raise_amount), engine=engine)
    assert e.code == "DS0B"
    assert "digest mismatch" in str(e)


@pytest.mark.parametrize("engine", ENGINES)
def test_tampered_header(pki: Pki, engine: Engine) -> None:
    """The header is signed too: the reference is the whole message."""
    signed = pki.a_rsa.signer().sign(PACS008)

    def redirect(root: etree._Element) -> None:
        one(root, "h:AppHdr/h:To/h:FIId/h:FinInstnId/h:BICFI").text = "BNKCUS33XXX"

    assert "digest mismatch" in str(rejected(pki, mutate(signed, redirect), engine=engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_tampered_signed_info(pki: Pki, engine: Engine) -> None:
    """A DigestValue recomputed by an attacker breaks the signature value instead."""
    root = tree(pki.a_ec.signer().sign(PACS008))
    one(root, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt").text = "12500.00"
    sgntr = one(root, "h:AppHdr/h:Sgntr")
    sig = one(sgntr, "ds:Signature")
    sgntr.remove(sig)
    octets = etree.tostring(root, method="c14n", exclusive=True, with_comments=False)
    one(sig, ".//ds:DigestValue").text = base64.b64encode(hashlib.sha256(octets).digest()).decode()
    sgntr.append(sig)
    e = rejected(pki, root, engine=engine)
    assert e.code == "DS0B"
    assert "does not verify" in str(e)


def test_signed_by_another_participant(pki: Pki) -> None:
    signed = pki.b_ec.signer().sign(PACS008)
    e = rejected(pki, signed, sender=A)
    assert e.code == "DS0B"
    assert str(e) == f"signed by a key not registered to {A}"
    Verifier(pki.directory).verify(signed, B)  # the same message is fine from B


def test_self_signed_certificate_in_sender_name(pki: Pki) -> None:
    """A certificate in KeyInfo is never trusted on its own."""
    signed = pki.rogue.signer().sign(PACS008)
    assert str(rejected(pki, signed)) == f"signed by a key not registered to {A}"


@pytest.mark.parametrize("engine", ENGINES)
def test_key_info_naming_a_registered_certificate_it_did_not_sign_with(
    pki: Pki, engine: Engine
) -> None:
    """KeyInfo only selects; the registered certificate's key must verify."""
    signed = pki.rogue.signer().sign(PACS008)
    real = pki.a_ec.signer().sign(PACS008)
    genuine_key_info = one(tree(real), ".//ds:KeyInfo")

    def swap_key_info(root: etree._Element) -> None:
        sig = one(root, ".//ds:Signature")
        sig.replace(one(sig, "ds:KeyInfo"), genuine_key_info)

    e = rejected(pki, mutate(signed, swap_key_info), engine=engine)
    assert e.code == "DS0B"
    assert "does not verify" in str(e)


@pytest.mark.parametrize("engine", ["xmlsec", "native"])
def test_key_info_naming_a_certificate_of_another_key_type(pki: Pki, engine: Engine) -> None:
    """An ECDSA signature whose KeyInfo names the sender's RSA certificate."""
    signed = pki.a_ec.signer().sign(PACS008)
    rsa_key_info = one(tree(pki.a_rsa.signer().sign(PACS008)), ".//ds:KeyInfo")

    def swap_key_info(root: etree._Element) -> None:
        sig = one(root, ".//ds:Signature")
        sig.replace(one(sig, "ds:KeyInfo"), rsa_key_info)

    e = rejected(pki, mutate(signed, swap_key_info), engine=engine)
    assert e.code == "DS0B"
    assert f"{ECDSA_SHA256} does not fit the key" in str(e)


def test_unknown_certificate(pki: Pki) -> None:
    """A certificate the directory lists but the CA does not vouch for (status UNKNOWN)."""
    directory = Directory(ca=pki.directory.ca, certs={A: [pki.rogue.cert]})
    signed = pki.rogue.signer().sign(PACS008)
    with pytest.raises(SignatureRejected) as caught:
        Verifier(directory).verify(signed, A)
    assert caught.value.code == "DS0B"
    assert "not a certificate of the scheme CA" in str(caught.value)


def test_no_key_info(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)
    stripped = mutate(signed, lambda r: one(r, ".//ds:Signature").remove(one(r, ".//ds:KeyInfo")))
    assert "no ds:KeyInfo" in str(rejected(pki, stripped))


# --- DS0C / DS0D: revoked, expired, not yet valid -----------------------------------------


def test_revoked_key(pki: Pki) -> None:
    e = rejected(pki, pki.a_revoked.signer().sign(PACS008))
    assert e.code == "DS0C"
    assert str(e) == f"certificate 0x{pki.a_revoked.cert.serial_number:x} of {A} revoked"
    assert isinstance(e, errors.KeyRevoked)


def test_expired_key(pki: Pki) -> None:
    e = rejected(pki, pki.a_expired.signer().sign(PACS008))
    assert e.code == "DS0D"
    end = pki.a_expired.cert.not_valid_after_utc.isoformat()
    assert str(e) == f"certificate 0x{pki.a_expired.cert.serial_number:x} expired at {end}"
    assert isinstance(e, errors.KeyExpired)


def test_not_yet_valid_key(pki: Pki) -> None:
    e = rejected(pki, pki.a_future.signer().sign(PACS008))
    assert e.code == "DS0D"
    assert "not valid before" in str(e)


# --- signature wrapping and misplaced signatures ------------------------------------------


def test_extra_document_in_envelope(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)

    def wrap(root: etree._Element) -> None:
        doc = one(root, "d:Document")
        forged = copy.deepcopy(doc)
        one(forged, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt").text = "12500.00"
        doc.addprevious(forged)

    root = tree(mutate(signed, wrap))
    e = rejected(pki, root)
    assert e.code == "DS0B"
    assert "exactly one AppHdr followed by one Document" in str(e)
    with pytest.raises(BadEnvelope):  # from bytes, the hardened parser refuses it first
        Verifier(pki.directory).verify(etree.tostring(root), A)


@pytest.mark.parametrize("engine", ENGINES)
def test_forged_document_hidden_in_the_signature(pki: Pki, engine: Engine) -> None:
    """A ds:Object is not covered by an enveloped signature: a lax verifier accepts a
    message carrying a forged Document there (ahead of the real one in document order)."""
    signed = pki.a_ec.signer().sign(PACS008)

    def hide(root: etree._Element) -> None:
        forged = copy.deepcopy(one(root, "d:Document"))
        one(forged, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt").text = "12500.00"
        obj = etree.SubElement(one(root, ".//ds:Signature"), f"{{{DS_NS}}}Object")
        obj.append(forged)

    wrapped = mutate(signed, hide)
    first = tree(wrapped).find(".//d:IntrBkSttlmAmt", NS)
    assert first is not None and first.text == "12500.00"  # what a careless reader sees
    XMLVerifier().verify(
        tree(wrapped),
        x509_cert=pki.a_ec.cert,
        expect_config=SignatureConfiguration(location=f"./{{{HEAD}}}AppHdr/{{{HEAD}}}Sgntr/"),
    )  # signxml alone accepts it
    e = rejected(pki, wrapped, engine=engine)
    assert e.code == "DS0B"
    assert "inside ds:Signature is not allowed" in str(e)


def test_signxml_must_have_covered_the_whole_message(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signxml engine accepts only if what signxml verified is the canonical message."""
    signed = pki.a_ec.signer().sign(PACS008)
    Verifier(pki.directory, engine="signxml").verify(signed, A)
    genuine = XMLVerifier.verify

    def covering_less(self: XMLVerifier, data: Any, **kw: Any) -> Any:
        result = genuine(self, data, **kw)
        assert isinstance(result, VerifyResult)
        return dataclasses.replace(result, signed_data=result.signed_data[:-10])

    monkeypatch.setattr(XMLVerifier, "verify", covering_less)
    e = rejected(pki, signed, engine="signxml")
    assert e.code == "DS0B"
    assert str(e) == "what the signature covers is not the message"


@pytest.mark.parametrize("engine", ENGINES)
def test_bizmsg_taken_out_of_another_document(pki: Pki, engine: Engine) -> None:
    """URI="" is the signature's whole document: xmlsec verifies a BizMsg only at its root.

    A BizMsg element detached from a larger tree has no parent yet still belongs to that
    tree's document; the other engines canonicalise the element itself."""
    container = etree.Element("Container")
    root = tree(pki.a_ec.signer().sign(PACS008))
    container.append(root)
    container.remove(root)
    assert root.getparent() is None and root.getroottree().getroot() is container
    if engine == "xmlsec":
        assert (
            str(rejected(pki, root, engine=engine)) == "the BizMsg is not the root of its document"
        )
    else:
        Verifier(pki.directory, engine=engine).verify_tree(root, A)


def test_xmlsec_itself_refuses_other_algorithms(pki: Pki) -> None:
    """Behind the profile checks, the xmlsec context is limited to the profile too."""
    import xmlsec

    signed = _signxml_sign(pki.a_rsa, PACS008)  # inclusive c14n 1.1, otherwise the profile
    XMLVerifier().verify(tree(signed), x509_cert=pki.a_rsa.cert)  # valid XML-DSig
    sig = one(tree(signed), ".//ds:Signature")
    key = xmldsig._public_key(pki.a_rsa.cert).key
    unrestricted = xmlsec.SignatureContext()
    unrestricted.key = key
    unrestricted.verify(sig)
    with pytest.raises(xmlsec.Error):
        xmldsig._xmlsec_context(key).verify(sig)


def test_document_copy_beside_the_signature(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)
    wrapped = mutate(
        signed, lambda r: one(r, "h:AppHdr/h:Sgntr").append(copy.deepcopy(one(r, "d:Document")))
    )
    assert "must hold the ds:Signature and nothing else" in str(rejected(pki, wrapped))


def _into_header(root: etree._Element, sig: etree._Element) -> None:
    one(root, "h:AppHdr").append(sig)


def _into_document(root: etree._Element, sig: etree._Element) -> None:
    one(root, "d:Document/d:FIToFICstmrCdtTrf").append(sig)


def _second_sgntr(root: etree._Element, sig: etree._Element) -> None:
    one(root, "h:AppHdr/h:Sgntr").addnext(etree.Element(f"{{{HEAD}}}Sgntr"))


@pytest.mark.parametrize(
    "move",
    [_into_header, _into_document, _second_sgntr],
    ids=["directly-in-AppHdr", "in-Document", "second-Sgntr"],
)
def test_signature_in_a_wrong_place(
    pki: Pki, move: Callable[[etree._Element, etree._Element], None]
) -> None:
    signed = pki.a_ec.signer().sign(PACS008)

    def relocate(root: etree._Element) -> None:
        sgntr = one(root, "h:AppHdr/h:Sgntr")
        move(root, one(sgntr, "ds:Signature"))
        if len(sgntr) == 0:
            one(root, "h:AppHdr").remove(sgntr)

    e = rejected(pki, tree(mutate(signed, relocate)))
    assert e.code == "DS0B"
    assert "not the signature of AppHdr/Sgntr" in str(e)


def test_two_signatures(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)
    doubled = mutate(
        signed,
        lambda r: one(r, "d:Document/d:FIToFICstmrCdtTrf").append(
            copy.deepcopy(one(r, ".//ds:Signature"))
        ),
    )
    assert str(rejected(pki, doubled)) == "2 ds:Signature elements; exactly one is allowed"


def test_comment_in_an_amount(pki: Pki) -> None:
    """Comments are outside the digest, yet cut a text node short for a reader."""
    signed = pki.a_ec.signer().sign(PACS008)

    def split(root: etree._Element) -> None:
        amount = one(root, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt")
        amount.text = "1"
        amount.append(etree.Comment(""))
        amount[0].tail = "250.00"

    commented = tree(mutate(signed, split))
    assert one(commented, ".//d:CdtTrfTxInf/d:IntrBkSttlmAmt").text == "1"
    plain = etree.tostring(tree(signed), method="c14n", exclusive=True, with_comments=False)
    assert etree.tostring(commented, method="c14n", exclusive=True, with_comments=False) == plain
    e = rejected(pki, commented)
    assert e.code == "DS0B"
    assert "comment" in str(e)


# --- only the scheme's algorithms -------------------------------------------------------


def _signxml_sign(cred: Credential, message: bytes, **options: Any) -> bytes:
    """`message` signed by signxml with `options`: valid XML-DSig, outside the profile."""
    root = tree(message)
    sgntr = etree.SubElement(one(root, "h:AppHdr"), f"{{{HEAD}}}Sgntr")
    etree.SubElement(sgntr, f"{{{DS_NS}}}Signature", nsmap={"ds": DS_NS}, Id="placeholder")
    reference = options.pop("reference_uri", None)
    signed = XMLSigner(**options).sign(
        root, key=cred.key, cert=[cred.cert], reference_uri=reference
    )
    return etree.tostring(signed, encoding="UTF-8")


EXC = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"signature_algorithm": "rsa-sha512", "c14n_algorithm": EXC}, "SignatureMethod"),
        ({"digest_algorithm": "sha512", "c14n_algorithm": EXC}, "DigestMethod"),
        ({}, "CanonicalizationMethod"),  # signxml's default: inclusive c14n 1.1
        ({"c14n_algorithm": EXC, "reference_uri": ["#msg"]}, "only URI"),
    ],
    ids=["rsa-sha512", "sha512-digest", "c14n-1.1", "id-reference"],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_other_algorithms_refused(
    pki: Pki, options: dict[str, Any], reason: str, engine: Engine
) -> None:
    """Cryptographically valid signatures by the sender's own key, outside the profile."""
    message = PACS008
    if "reference_uri" in options:
        message = PACS008.replace(b"<Document ", b'<Document Id="msg" ', 1)
    signed = _signxml_sign(pki.a_rsa, message, **options)
    XMLVerifier().verify(tree(signed), x509_cert=pki.a_rsa.cert)  # valid XML-DSig
    e = rejected(pki, tree(signed), engine=engine)
    assert e.code == "DS0B"
    assert reason in str(e)


def test_profile_refuses_extra_transform_and_reference(pki: Pki) -> None:
    signed = pki.a_ec.signer().sign(PACS008)

    def extra_transform(root: etree._Element) -> None:
        etree.SubElement(one(root, ".//ds:Transforms"), f"{{{DS_NS}}}Transform").set(
            "Algorithm", "http://www.w3.org/TR/1999/REC-xpath-19991116"
        )

    def extra_reference(root: etree._Element) -> None:
        ref = one(root, ".//ds:Reference")
        ref.addnext(copy.deepcopy(ref))

    for change in (extra_transform, extra_reference):
        e = rejected(pki, mutate(signed, change))
        assert e.code == "DS0B"
        assert "the scheme's profile is" in str(e)


# --- the signer refuses what it cannot sign properly -------------------------------------


def test_signer_refusals(pki: Pki) -> None:
    signer = pki.a_ec.signer()
    signed = signer.sign(PACS008)
    with pytest.raises(ValueError, match="already carries"):
        signer.sign(signed)
    document = etree.tostring(one(tree(PACS008), "d:Document"))
    with pytest.raises(ValueError, match="only a BizMsg"):
        signer.sign(document)
    commented = PACS008.replace(b"<Document ", b"<!-- note --><Document ", 1)
    with pytest.raises(ValueError, match="comments"):
        signer.sign(commented)
    with pytest.raises(ValueError, match="does not match"):
        Signer(pki.a_ec.key_pem, pki.b_ec.cert_pem)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_cert = _certificate(A, small, x509.Name([]), small)
    with pytest.raises(ValueError, match="at least 2048"):
        Signer(Credential(small, small_cert).key_pem, Credential(small, small_cert).cert_pem)


def test_not_a_message(pki: Pki) -> None:
    with pytest.raises(NotWellFormed):
        Verifier(pki.directory).verify(b"<BizMsg", A)


def test_signer_from_files(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(pki.a_rsa.key_pem)
    (tmp_path / "c.pem").write_bytes(pki.a_rsa.cert_pem)
    signer = Signer.from_files(tmp_path / "k.pem", tmp_path / "c.pem")
    assert signer.certificate == pki.a_rsa.cert
    assert signer.signature_method == RSA_SHA256
    Verifier(pki.directory).verify(signer.sign(PACS008), A)


# --- with the scheme's real trust store ---------------------------------------------------


def test_with_the_scheme_trust_store(tmp_path: Path) -> None:
    ca = SchemeCA.init(tmp_path)
    issued = ca.issue(A)
    signed = Signer.from_files(issued.signing_key, issued.signing_cert).sign(PACS008)
    store = TrustStore.load(tmp_path)
    directory: CertificateDirectory = store
    Verifier(directory).verify(signed, A)
    ca.revoke(A, issued.signing_serial)
    store.reload()
    with pytest.raises(SignatureRejected) as caught:
        Verifier(directory).verify(signed, A)
    assert caught.value.code == "DS0C"
