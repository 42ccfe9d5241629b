"""Writing a batch file for the switch's SFTP drop (RULEBOOK §7), as a bank does.

A batch file is one signed BizMsg: an AppHdr from the bank to the switch (`MsgDefIdr`
pacs.008.001.08) and a pacs.008 Document whose group header counts and totals the
transactions (`NbOfTxs`, `CtrlSum`) and names the bank as instructing agent, followed by
one `CdtTrfTxInf` per payment, each written as in a real-time pacs.008. It is written as a
stream (transactions are rendered one at a time, never all held at once) and signed with
the bank's key over the whole file (`switch.security.filesig`).

Upload it under a temporary name (`.name`, `name.part` or `name.tmp`) into `/inbox`, then
rename it to its final name: only then does the switch take it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from lxml import etree

from participants.messages import agent_xml, amount_text, credit_transfer
from switch.iso20022.build import escape, iso_datetime
from switch.iso20022.registry import ENVELOPE_NS, MessageType
from switch.iso20022.views import Agent, Proxy
from switch.security.filesig import SGNTR_PLACEHOLDER, sign_file
from switch.security.xmldsig import Signer

__all__ = ["BatchTransaction", "write_batch_file"]

_DOC_NS = MessageType.PACS_008.namespace
_TX = f"{{{_DOC_NS}}}CdtTrfTxInf"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchTransaction:
    """One payment of a batch file (the fields of a real-time pacs.008's transaction)."""

    uetr: str
    end_to_end_id: str
    tx_id: str
    amount: Decimal
    creditor_agent: Agent
    creditor_name: str
    creditor_account: str | None
    debtor_name: str
    debtor_account: str
    creditor_proxy: Proxy | None = None
    instr_id: str | None = None
    remittance: str | None = None


def _transaction(
    tx: BatchTransaction, *, sender: Agent, created: datetime, day: date, currency: str
) -> bytes:
    doc = credit_transfer(
        msg_id="X",
        created=created,
        uetr=tx.uetr,
        end_to_end_id=tx.end_to_end_id,
        tx_id=tx.tx_id,
        instr_id=tx.instr_id,
        amount=tx.amount,
        currency=currency,
        debtor_agent=sender,
        creditor_agent=tx.creditor_agent,
        debtor_name=tx.debtor_name,
        debtor_account=tx.debtor_account,
        creditor_name=tx.creditor_name,
        creditor_account=tx.creditor_account,
        creditor_proxy=tx.creditor_proxy,
        remittance=tx.remittance,
        settlement_date=day,
    )
    el = doc.find(f"{{{_DOC_NS}}}FIToFICstmrCdtTrf/{_TX}")
    assert el is not None
    return etree.tostring(el, encoding="UTF-8")


def write_batch_file(
    path: Path,
    *,
    sender: Agent,
    switch: Agent,
    msg_id: str,
    created: datetime,
    settlement_date: date,
    transactions: Iterable[BatchTransaction],
    signer: Signer | None,
    currency: str = "USD",
) -> tuple[int, Decimal]:
    """Write the batch file of `transactions` at `path`; (transactions, their total).

    Signed with `signer` (the bank's signing key); unsigned when it is None, for a switch
    run without message security. Temporary files go beside `path` and are removed.
    """
    path = Path(path)
    directory = path.parent
    count = 0
    total = Decimal(0)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".batch-") as work:
        body = Path(work) / "body"
        with open(body, "wb") as out:
            for tx in transactions:
                out.write(
                    _transaction(
                        tx, sender=sender, created=created, day=settlement_date, currency=currency
                    )
                )
                count += 1
                total += tx.amount
        if count == 0:
            raise ValueError("a batch file holds at least one transaction")
        sgntr = SGNTR_PLACEHOLDER.decode() if signer is not None else ""
        head = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<BizMsg xmlns="{ENVELOPE_NS}">'
            f'<AppHdr xmlns="{MessageType.HEAD_001.namespace}">'
            f"<Fr><FIId>{agent_xml(sender)}</FIId></Fr><To><FIId>{agent_xml(switch)}</FIId></To>"
            f"<BizMsgIdr>{escape(msg_id)}</BizMsgIdr>"
            f"<MsgDefIdr>{MessageType.PACS_008.value}</MsgDefIdr>"
            f"<CreDt>{iso_datetime(created)}</CreDt>{sgntr}</AppHdr>"
            f'<Document xmlns="{_DOC_NS}"><FIToFICstmrCdtTrf><GrpHdr>'
            f"<MsgId>{escape(msg_id)}</MsgId><CreDtTm>{iso_datetime(created)}</CreDtTm>"
            f"<NbOfTxs>{count}</NbOfTxs><CtrlSum>{amount_text(total)}</CtrlSum>"
            f"<IntrBkSttlmDt>{settlement_date.isoformat()}</IntrBkSttlmDt>"
            "<SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf>"
            f"<InstgAgt>{agent_xml(sender)}</InstgAgt>"
            "</GrpHdr>"
        ).encode()
        tail = b"</FIToFICstmrCdtTrf></Document></BizMsg>"
        unsigned = Path(work) / "unsigned"
        with open(unsigned, "wb") as out, open(body, "rb") as src:
            out.write(head)
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.write(tail)
        body.unlink()
        temporary = Path(work) / "signed"
        if signer is None:
            os.replace(unsigned, temporary)
        else:
            with open(temporary, "wb") as out:
                sign_file(signer, unsigned, out.write)
        os.replace(temporary, path)
    return count, total
