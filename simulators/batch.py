"""A simulated bank dropping batch files (RULEBOOK §7): write, sign, upload, read the answer.

`drop_batch` is what `rtpswitch simulate-batch` runs and what the batch benchmark
drives: the bank writes a pacs.008 file of `count` credit transfers (round robin over
the creditor agents given), signs it with its signing key when it has one, uploads it
to the switch's SFTP drop under a temporary name and renames it, waits for the status
file in `/outbox`, downloads it, verifies the switch's signature over it (with the
scheme's trust store, when given), and reads it as a stream: the group status and the
count of transactions per status and per reason.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import paramiko
from lxml import etree

from participants.batchfile import BatchTransaction, write_batch_file
from participants.sftp import BatchDropClient
from switch.iso20022.views import Agent
from switch.security.filesig import SIGNATURE_TAG, canonical_digest
from switch.security.xmldsig import Signer, Verifier

__all__ = ["BatchReport", "drop_batch", "read_answer", "transactions"]

_PACS002: Final = "{urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10}"
_ADMI002: Final = "{urn:iso:std:iso:20022:tech:xsd:admi.002.001.01}"


@dataclass(slots=True, kw_only=True)
class BatchReport:
    """What became of one batch file, as the bank sees it."""

    bank: str
    file: str
    transactions: int
    total: str
    answer: str
    group_status: str
    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    """Why the file was refused whole (its reason text), when it was."""
    write_seconds: float = 0.0
    upload_seconds: float = 0.0
    answer_seconds: float = 0.0
    """From the rename that completed the upload to the answer in `/outbox`."""
    signature_verified: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "file": self.file,
            "transactions": self.transactions,
            "total": self.total,
            "answer": self.answer,
            "group_status": self.group_status,
            "by_status": self.by_status,
            "by_reason": self.by_reason,
            "reason": self.reason,
            "write_seconds": round(self.write_seconds, 3),
            "upload_seconds": round(self.upload_seconds, 3),
            "answer_seconds": round(self.answer_seconds, 3),
            "signature_verified": self.signature_verified,
        }


def transactions(
    count: int,
    creditors: Sequence[Agent],
    amount: Decimal,
    *,
    account: str = "000000000002",
    bank: str,
) -> Iterator[BatchTransaction]:
    """`count` credit transfers of `amount`, round robin over `creditors`."""
    run = uuid.uuid4().hex[:8]
    for i in range(count):
        yield BatchTransaction(
            uetr=str(uuid.uuid4()),
            end_to_end_id=f"{bank[:4]}{run}{i:010d}",
            tx_id=f"{bank[:4]}B{run}{i:010d}",
            amount=amount,
            creditor_agent=creditors[i % len(creditors)],
            creditor_name="Batch Payee",
            creditor_account=account,
            debtor_name=f"Customer of {bank}",
            debtor_account="000000000001",
        )


def read_answer(path: Path) -> tuple[str, Counter[str], Counter[str], str | None]:
    """(group status, transactions per status, per reason, refusal text) of a status
    file (pacs.002) or an error file (admi.002: group status "ERROR"), read as a stream."""
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    group = "?"
    text: str | None = None
    for _event, el in etree.iterparse(
        str(path),
        events=("end",),
        tag=(f"{_PACS002}OrgnlGrpInfAndSts", f"{_PACS002}TxInfAndSts", f"{_ADMI002}Rsn"),
        resolve_entities=False,
        no_network=True,
        huge_tree=True,
    ):
        if el.tag == f"{_ADMI002}Rsn":
            group, text = "ERROR", el.findtext(f"{_ADMI002}RsnDesc")
        elif el.tag == f"{_PACS002}OrgnlGrpInfAndSts":
            group = el.findtext(f"{_PACS002}GrpSts") or "?"
            text = el.findtext(f"{_PACS002}StsRsnInf/{_PACS002}AddtlInf")
        else:
            by_status[el.findtext(f"{_PACS002}TxSts") or "?"] += 1
            reason = el.findtext(f"{_PACS002}StsRsnInf/{_PACS002}Rsn/{_PACS002}Cd")
            if reason:
                by_reason[reason] += 1
            el.clear()
            parent = el.getparent()
            while parent is not None and el.getprevious() is not None:
                del parent[0]
    return group, by_status, by_reason, text if group in ("RJCT", "ERROR") else None


def _verify(path: Path, verifier: Verifier, switch_id: str) -> None:
    """The switch's signature over an answer file, checked as a stream."""
    signature = None
    for _event, el in etree.iterparse(
        str(path), events=("end",), tag=SIGNATURE_TAG, resolve_entities=False, no_network=True
    ):
        signature = el
        break
    if signature is None:
        raise ValueError(f"{path.name} is not signed by the switch")
    verifier.verify_detached(signature, canonical_digest(path), switch_id, at=datetime.now(UTC))


def drop_batch(
    *,
    host: str,
    port: int,
    bank: str,
    ssh_key: paramiko.PKey | Path,
    switch_id: str,
    count: int,
    creditors: Sequence[Agent],
    amount: Decimal,
    workdir: Path,
    signer: Signer | None = None,
    verifier: Verifier | None = None,
    account: str = "000000000002",
    timeout: float = 600.0,
) -> BatchReport:
    """Write, upload and follow one batch file of `bank` (see the module doc)."""
    if count < 1:
        raise ValueError("a batch file needs at least one payment")
    if not creditors:
        raise ValueError("name at least one creditor agent")
    now = datetime.now(UTC)
    msg_id = f"B{now:%Y%m%d%H%M%S}{uuid.uuid4().hex[:12].upper()}"
    path = Path(workdir) / f"{msg_id}.xml"
    started = time.monotonic()
    written, total = write_batch_file(
        path,
        sender=Agent(bicfi=bank),
        switch=Agent(bicfi=switch_id),
        msg_id=msg_id,
        created=now,
        settlement_date=now.date(),
        transactions=transactions(count, creditors, amount, account=account, bank=bank),
        signer=signer,
    )
    write_seconds = time.monotonic() - started
    with BatchDropClient(host, port, bank, ssh_key) as drop:
        started = time.monotonic()
        name = drop.upload(path)
        uploaded = time.monotonic()
        answer = drop.wait_for(name, timeout=timeout)
        answered = time.monotonic()
        local = drop.fetch(answer, Path(workdir) / answer)
    path.unlink()
    verified = False
    if verifier is not None:
        _verify(local, verifier, switch_id)
        verified = True
    group, by_status, by_reason, text = read_answer(local)
    return BatchReport(
        bank=bank,
        file=name,
        transactions=written,
        total=str(total),
        answer=answer,
        group_status=group,
        by_status=dict(sorted(by_status.items())),
        by_reason=dict(sorted(by_reason.items())),
        reason=text,
        write_seconds=write_seconds,
        upload_seconds=uploaded - started,
        answer_seconds=answered - uploaded,
        signature_verified=verified,
    )
