"""XML-DSig over files read as streams, held to the tree implementation.

`canonical_digest` must equal the SHA-256 of libxml2's exclusive c14n of the whole tree
(minus the signature) for every shape of input: the fast stitched path for scheme-shaped
messages and the C14N 2.0 fallback for anything else. What `sign_file` signs verifies
with the tree `Verifier`, and what the tree `Signer` signs verifies detached.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from switch.security import filesig
from switch.security.filesig import SGNTR_PLACEHOLDER, canonical_digest, sign_file
from switch.security.xmldsig import SignatureRejected, Verifier
from tests.unit.test_xmldsig import EXAMPLES, PACS008, A, B, Pki, pki  # noqa: F401

NOW = datetime.now(UTC)
DOC = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"


def tree_digest(data: bytes, exclude_signature: bool = True) -> bytes:
    root = etree.fromstring(data)
    if exclude_signature:
        for sig in list(root.iter(filesig.SIGNATURE_TAG)):
            parent = sig.getparent()
            assert parent is not None
            if sig.tail:
                prev = sig.getprevious()
                if prev is not None:
                    prev.tail = (prev.tail or "") + sig.tail
                else:
                    parent.text = (parent.text or "") + sig.tail
            parent.remove(sig)
    return hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()


def batch(n: int, *, pretty: bool) -> bytes:
    sep = "\n    " if pretty else ""
    tx = (
        "<CdtTrfTxInf><PmtId><EndToEndId>E{i}</EndToEndId><TxId>T{i}</TxId></PmtId>"
        '<IntrBkSttlmAmt Ccy="USD">1.{i:02d}</IntrBkSttlmAmt>'
        "<RmtInf><Ustrd>fish &amp; chips &lt;{i}&gt; \u00e9</Ustrd></RmtInf></CdtTrfTxInf>"
    )
    txs = sep.join(tx.format(i=i) for i in range(n))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001">{sep}'
        '<AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">'
        f"<BizMsgIdr>M</BizMsgIdr><Sgntr></Sgntr></AppHdr>{sep}"
        f'<Document xmlns="{DOC}" xmlns:unused="urn:x">{sep}<FIToFICstmrCdtTrf>{sep}'
        f"<GrpHdr><MsgId>M</MsgId></GrpHdr>{sep}{txs}{sep}</FIToFICstmrCdtTrf>{sep}"
        f"</Document>{sep}</BizMsg>"
    ).encode()


STMT_DOC = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


def statement(n: int, *, pretty: bool, statements: int = 1) -> bytes:
    sep = "\n  " if pretty else ""
    entry = (
        '<Ntry><Amt Ccy="USD">1.{i:02d}</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
        "<NtryDtls><TxDtls><Refs><EndToEndId>E{i} &amp; &lt;x&gt;</EndToEndId></Refs>"
        "</TxDtls></NtryDtls></Ntry>"
    )
    stmt = (
        f'<Stmt>{sep}<Id>S</Id>{sep}<Bal><Amt Ccy="USD">5.00</Amt></Bal>{sep}'
        + sep.join(entry.format(i=i) for i in range(n))
        + f"{sep}</Stmt>"
    )
    return (
        f'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001">{sep}'
        '<AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">'
        f"<BizMsgIdr>S</BizMsgIdr><Sgntr></Sgntr></AppHdr>{sep}"
        f'<Document xmlns="{STMT_DOC}">{sep}<BkToCstmrStmt>{sep}'
        f"<GrpHdr><MsgId>S</MsgId></GrpHdr>{sep}{sep.join([stmt] * statements)}{sep}"
        f"</BkToCstmrStmt>{sep}</Document>{sep}</BizMsg>"
    ).encode()


SHAPES = {
    "statement": statement(4, pretty=False),
    "statement, pretty": statement(4, pretty=True),
    "two statements": statement(2, pretty=True, statements=2),
    "statement without entries": statement(0, pretty=True),
    "empty statement": statement(0, pretty=False).replace(
        b'<Stmt><Id>S</Id><Bal><Amt Ccy="USD">5.00</Amt></Bal></Stmt>', b"<Stmt/>"
    ),
    "attribute on a statement": statement(2, pretty=False).replace(
        b"<Stmt>", b'<Stmt xmlns:q="urn:q" q:a="1">'
    ),
    "compact": batch(5, pretty=False),
    "pretty": batch(5, pretty=True),
    "prefixed document": (
        b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001"><AppHdr xmlns="urn:h"><A>1</A></AppHdr>'
        b'<d:Document xmlns:d="' + DOC.encode() + b'"><d:F><d:G>x</d:G><d:T>1</d:T></d:F>'
        b"</d:Document></BizMsg>"
    ),
    "prefix used in a transaction": (
        b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001" xmlns:p="urn:p"><AppHdr xmlns="urn:h"/>'
        b'<Document xmlns="' + DOC.encode() + b'"><F><G p:a="1">x</G><T><p:X>1</p:X></T></F>'
        b"</Document></BizMsg>"
    ),
    "attribute on the document": (
        b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001"><AppHdr xmlns="urn:h"/>'
        b'<Document xmlns="'
        + DOC.encode()
        + b'" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="x">'
        b"<F><T>1</T></F></Document></BizMsg>"
    ),
    "text naming xmlns, carriage returns": (
        b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001"><AppHdr xmlns="urn:h"/>'
        b'<Document xmlns="' + DOC.encode() + b'"><F><T>xmlns=&#13;"x"</T><T>2</T></F>'
        b"</Document></BizMsg>"
    ),
    "empty message element": (
        b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001"><AppHdr xmlns="urn:h"/>'
        b'<Document xmlns="' + DOC.encode() + b'"><F/></Document></BizMsg>'
    ),
    "same namespace as the envelope": (
        b'<BizMsg xmlns="urn:e"><AppHdr xmlns="urn:e"/><Document xmlns="urn:e"><F/></Document>'
        b"</BizMsg>"
    ),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_digest_equals_tree_exclusive_c14n(name: str, tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_bytes(SHAPES[name])
    expected = tree_digest(SHAPES[name])
    assert canonical_digest(path) == expected
    assert filesig._c14n2_digest(path, True) == expected


def test_scheme_shapes_take_the_fast_path(tmp_path: Path) -> None:
    for name in ("compact", "pretty"):
        path = tmp_path / f"{name}.xml"
        path.write_bytes(SHAPES[name])
        assert filesig._stitched_digest(path, True) == tree_digest(SHAPES[name])
    odd = tmp_path / "odd.xml"
    odd.write_bytes(SHAPES["prefixed document"])
    assert filesig._stitched_digest(odd, True) is None


@pytest.mark.parametrize("name", [n for n in SHAPES if n.startswith(("statement", "two"))])
def test_statements_take_the_fast_path(name: str, tmp_path: Path) -> None:
    path = tmp_path / "s.xml"
    path.write_bytes(SHAPES[name])
    assert filesig._stitched_digest(path, True) == tree_digest(SHAPES[name])


@pytest.mark.parametrize("shape", ["batch", "statement"])
def test_fast_path_holds_one_part_at_a_time(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each transaction or entry is canonicalised and dropped: the tree never grows with
    the file (it holds what the parser has read ahead of the part being hashed)."""
    n = 5000
    data = batch(n, pretty=True) if shape == "batch" else statement(n, pretty=True)
    path = tmp_path / "big.xml"
    path.write_bytes(data)
    held: list[int] = []
    unit = filesig._unit

    def counting(el: etree._Element, doc_ns: str) -> bytes:
        parent = el.getparent()
        assert parent is not None
        held.append(len(parent))
        return unit(el, doc_ns)

    monkeypatch.setattr(filesig, "_unit", counting)
    assert filesig._stitched_digest(path, True) == tree_digest(data)
    assert len(held) >= n
    assert max(held) < n / 10


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples(example: Path) -> None:
    assert canonical_digest(example) == tree_digest(example.read_bytes())


def test_tree_signature_verifies_detached(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    signed = pki.a_ec.signer().sign(PACS008)
    path = tmp_path / "signed.xml"
    path.write_bytes(signed)
    sig = next(etree.fromstring(signed).iter(filesig.SIGNATURE_TAG))
    verifier = Verifier(pki.directory)
    verifier.verify_detached(sig, canonical_digest(path), A, at=NOW)
    with pytest.raises(SignatureRejected, match="not registered to"):
        verifier.verify_detached(sig, canonical_digest(path), B, at=NOW)
    path.write_bytes(signed.replace(b"BNKBUS33XXX", b"BNKCUS33XXX", 1))
    with pytest.raises(SignatureRejected, match="digest mismatch"):
        verifier.verify_detached(sig, canonical_digest(path), A, at=NOW)


@pytest.mark.parametrize("key", ["a_ec", "a_rsa"])
def test_sign_file_verifies_as_a_tree(pki: Pki, key: str, tmp_path: Path) -> None:  # noqa: F811
    unsigned = tmp_path / "unsigned.xml"
    unsigned.write_bytes(SHAPES["pretty"])
    out = bytearray()
    sign_file(getattr(pki, key).signer(), unsigned, out.extend)
    Verifier(pki.directory).verify(bytes(out), A, at=NOW)
    tampered = bytes(out).replace(b"<TxId>T3</TxId>", b"<TxId>T9</TxId>")
    with pytest.raises(SignatureRejected):
        Verifier(pki.directory).verify(tampered, A, at=NOW)


def test_sign_file_needs_one_empty_sgntr(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "u.xml"
    path.write_bytes(SHAPES["pretty"].replace(SGNTR_PLACEHOLDER, b""))
    with pytest.raises(ValueError, match="Sgntr"):
        sign_file(pki.a_ec.signer(), path, bytearray().extend)
