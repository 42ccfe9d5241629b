"""The status file of a batch file (pacs.002.001.10 built in pieces), against both schemas.

A status file answers a whole batch file: the original group's status with the number
of transactions per status, then one TxInfAndSts per transaction. It is written as a
stream (`status_file_open`, `status_file_transaction`..., `STATUS_FILE_CLOSE`), so the
pieces must join into a Document valid for the scheme schema and the ISO base schema,
both for a file cleared transaction by transaction and for one refused whole.
"""

from __future__ import annotations

from datetime import UTC, datetime

from switch.iso20022 import MessageType, build, default_registry, parse, validate, views
from switch.iso20022.views import Agent
from tests.oracle import base_errors

NOW = datetime(2026, 12, 4, 21, 30, tzinfo=UTC)
SWITCH = Agent(bicfi="SWCHUS33XXX")
BANK = Agent(bicfi="BNKAUS33XXX")


def message(document: bytes) -> bytes:
    header = build.header(
        sender=SWITCH,
        receiver=BANK,
        biz_msg_idr="SWSTS1",
        mtype=MessageType.PACS_002,
        created=NOW,
    )
    return build.business_message(header, document)


def errors(raw: bytes) -> tuple[list[str], list[str]]:
    return [str(i) for i in validate(parse(raw), default_registry())], base_errors(raw)


def test_cleared_file() -> None:
    doc = build.status_file_open(
        msg_id="SWSTS1",
        created=NOW,
        original_msg_id="B20261204A0001",
        original_created="2026-12-04T21:00:00.000Z",
        original_count=2,
        group_status="PART",
        counts={"ACSC": 1, "RJCT": 1},
        instructing_agent=SWITCH,
        instructed_agent=BANK,
    )
    doc += build.status_file_transaction(
        status_id="SWSTS1-0",
        status="ACSC",
        original_instr_id=None,
        original_end_to_end_id="E2E-0",
        original_tx_id="TX-0",
        original_uetr="3f2a7c1e-2b4d-4c6e-9a1b-0c2d3e4f5a6b",
        accepted_at=NOW,
        clearing_ref="SW123",
    )
    doc += build.status_file_transaction(
        status_id="SWSTS1-1",
        status="RJCT",
        original_instr_id="I-1",
        original_end_to_end_id="E2E-1 & <co>",
        original_tx_id="TX-1",
        original_uetr=None,
        reason="AM04",
        additional_info="insufficient position " * 10,
    )
    raw = message(doc + build.STATUS_FILE_CLOSE)
    assert errors(raw) == ([], [])
    msg = parse(raw)
    assert msg.document is not None
    text = raw.decode()
    assert "<GrpSts>PART</GrpSts>" in text and "<DtldNbOfTxs>1</DtldNbOfTxs>" in text
    assert "E2E-1 &amp; &lt;co&gt;" in text
    assert isinstance(views.status_report(msg.document), views.StatusReport)


def test_file_refused_whole() -> None:
    doc = build.status_file_open(
        msg_id="SWSTS2",
        created=NOW,
        original_msg_id="B20261204A0001",
        original_created=None,
        original_count=None,
        group_status="RJCT",
        reason="DUPL",
        additional_info="the file repeats B20261204A0001, taken at 2026-12-04T21:00:00Z",
        instructing_agent=SWITCH,
        instructed_agent=BANK,
    )
    raw = message(doc + build.STATUS_FILE_CLOSE)
    assert errors(raw) == ([], [])
    assert "<Cd>DUPL</Cd>" in raw.decode()
