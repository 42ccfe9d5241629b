"""Batch files: written by a bank, checked whole and split by the switch (RULEBOOK §7).

Each refusal starts from a correct signed file written by `participants.batchfile`,
breaks one thing, and expects the file-level code and a reason naming what is wrong;
a file that passes splits into single-transaction messages that are valid for the
scheme and the ISO base schemas, in file order, and resume skips what was cleared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from participants.batchfile import BatchTransaction, write_batch_file
from sftp_bridge.batchfile import UNUSABLE, BatchFile, FileRefused, inspect, split
from switch.iso20022 import MessageType, default_registry, parse, validate, views
from switch.iso20022.views import Agent
from switch.security.xmldsig import Signer, Verifier
from tests.oracle import base_errors
from tests.unit.test_xmldsig import A, B, Pki, pki  # noqa: F401

NOW = datetime.now(UTC)
SWITCH = Agent(bicfi="SWCHUS33XXX")


def transactions(n: int, amount: str = "10.25") -> Iterator[BatchTransaction]:
    for i in range(n):
        yield BatchTransaction(
            uetr=str(uuid.uuid4()),
            end_to_end_id=f"E2E-{i}",
            tx_id=f"TX-{i}",
            amount=Decimal(amount),
            creditor_agent=Agent(bicfi=B),
            creditor_name="Bob Jones",
            creditor_account="200300400",
            debtor_name="Alice Smith",
            debtor_account="100200300",
        )


def write(path: Path, signer: Signer | None, n: int = 3, *, sender: str = A) -> Path:
    write_batch_file(
        path,
        sender=Agent(bicfi=sender),
        switch=SWITCH,
        msg_id="B20261204A0001",
        created=NOW,
        settlement_date=NOW.date(),
        transactions=transactions(n),
        signer=signer,
    )
    return path


def check(path: Path, pki: Pki, *, participant: str = A, max_bytes: int = 1 << 30) -> BatchFile:  # noqa: F811
    return inspect(
        path,
        participant,
        is_sender=lambda h: h.from_bicfi == participant,
        verifier=Verifier(pki.directory),
        at=NOW,
        max_bytes=max_bytes,
    )


def refused(path: Path, pki: Pki, **kw: object) -> FileRefused:  # noqa: F811
    with pytest.raises(FileRefused) as caught:
        check(path, pki, **kw)  # type: ignore[arg-type]
    return caught.value


@pytest.fixture
def good(pki: Pki, tmp_path: Path) -> Path:  # noqa: F811
    return write(tmp_path / "batch.xml", pki.a_ec.signer())


def test_a_signed_file_passes_and_splits(pki: Pki, good: Path) -> None:  # noqa: F811
    bf = check(good, pki)
    assert (bf.msg_id, bf.count, bf.size) == ("B20261204A0001", 3, good.stat().st_size)
    assert base_errors(good.read_bytes()) == []
    parts = list(split(bf))
    assert [i for i, _ in parts] == [0, 1, 2]
    for i, data in parts:
        msg = parse(data)
        assert validate(msg, default_registry()) == []
        assert base_errors(data) == []
        assert msg.document is not None
        ct = views.credit_transfer(msg.document)
        assert ct.msg_id == "B20261204A0001"
        assert [t.end_to_end_id for t in ct.transactions] == [f"E2E-{i}"]
        assert b"Sgntr" not in data and b"CtrlSum" not in data
        # The group header and the transaction inherit the namespace from Document.
        ns = MessageType.PACS_008.namespace.encode()
        assert data.count(b'xmlns="' + ns + b'"') == 1
        assert b"<GrpHdr><MsgId>" in data and b"<CdtTrfTxInf><PmtId>" in data
    assert [i for i, _ in split(bf, skip={0, 2})] == [1]


def test_unsigned_file(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    exc = refused(write(tmp_path / "u.xml", None), pki)
    assert (exc.code, exc.msg_id, exc.count) == ("DS0B", "B20261204A0001", 3)
    assert "not signed" in exc.text


def test_tampered_file(pki: Pki, good: Path) -> None:  # noqa: F811
    good.write_bytes(good.read_bytes().replace(b"<TxId>TX-1</TxId>", b"<TxId>TX-9</TxId>"))
    exc = refused(good, pki)
    assert exc.code == "DS0B" and "digest mismatch" in exc.text


def test_signed_by_another_bank(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    path = write(tmp_path / "b.xml", pki.b_ec.signer())
    assert refused(path, pki).code == "DS0B"


def test_revoked_and_expired_keys(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    assert refused(write(tmp_path / "r.xml", pki.a_revoked.signer()), pki).code == "DS0C"
    assert refused(write(tmp_path / "e.xml", pki.a_expired.signer()), pki).code == "DS0D"


def test_sender_is_not_the_logged_in_participant(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    path = write(tmp_path / "f.xml", pki.b_ec.signer(), sender=B)
    exc = refused(path, pki)
    assert exc.code == "RC01" and B in exc.text and A in exc.text


def test_schema_break_is_ff01_naming_the_line(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    unsigned = write(tmp_path / "s.xml", None)
    data = unsigned.read_bytes().replace(b">10.25<", b">ten<", 1)
    unsigned.write_bytes(data.replace(b"</CreDt>", b"</CreDt><Sgntr></Sgntr>", 1))
    signed = tmp_path / "signed.xml"
    from switch.security.filesig import sign_file

    with open(signed, "wb") as out:
        sign_file(pki.a_ec.signer(), unsigned, out.write)
    exc = refused(signed, pki)
    assert (
        exc.code == "FF01" and "IntrBkSttlmAmt" in exc.text and "transaction 1 (line " in exc.text
    )


def test_counts_that_do_not_add_up(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    from switch.security.filesig import sign_file

    for old, new, what in (
        (b"<NbOfTxs>3</NbOfTxs>", b"<NbOfTxs>4</NbOfTxs>", "NbOfTxs"),
        (b"<CtrlSum>30.75</CtrlSum>", b"<CtrlSum>30.76</CtrlSum>", "CtrlSum"),
    ):
        unsigned = write(tmp_path / "c.xml", None)
        data = unsigned.read_bytes().replace(old, new)
        unsigned.write_bytes(data.replace(b"</CreDt>", b"</CreDt><Sgntr></Sgntr>", 1))
        signed = tmp_path / "signed.xml"
        with open(signed, "wb") as out:
            sign_file(pki.a_ec.signer(), unsigned, out.write)
        exc = refused(signed, pki)
        assert exc.code == "FF01" and what in exc.text


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"this is not XML", "not well-formed"),
        (
            b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001">'
            b'<AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">',
            "not well-formed",
        ),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "DOCTYPE"),
        (b'<Document xmlns="urn:x"/>', "is not a {urn:rtpswitch:xsd:bizmsg.001}BizMsg"),
    ],
)
def test_unusable_files(pki: Pki, tmp_path: Path, data: bytes, words: str) -> None:  # noqa: F811
    path = tmp_path / "x.xml"
    path.write_bytes(data)
    exc = refused(path, pki)
    assert exc.code == UNUSABLE and words in exc.text


def test_oversized_file(pki: Pki, good: Path) -> None:  # noqa: F811
    exc = refused(good, pki, max_bytes=100)
    assert exc.code == UNUSABLE and "over the limit of 100" in exc.text


def test_truncated_file(pki: Pki, good: Path) -> None:  # noqa: F811
    data = good.read_bytes()
    good.write_bytes(data[: len(data) - 30])
    exc = refused(good, pki)
    assert exc.code == UNUSABLE and "not well-formed" in exc.text


@pytest.mark.parametrize(
    ("before", "inserted", "what"),
    [
        (b"<GrpHdr>", b"<!-- x -->", "comment"),
        (b"<IntrBkSttlmAmt", b"<!-- deep in a transaction -->", "comment"),
        (b"<BizMsg", b"<!-- before the root -->", "comment"),
        (b"<EndToEndId>", b"<?note x?>", "processing instruction"),
    ],
)
def test_comments_and_processing_instructions_are_refused(
    pki: Pki,  # noqa: F811
    good: Path,
    before: bytes,
    inserted: bytes,
    what: str,
) -> None:
    data = good.read_bytes()
    assert before in data
    good.write_bytes(data.replace(before, inserted + before, 1))
    exc = refused(good, pki)
    assert exc.code == "DS0B" and f"{what} in the file" in exc.text
