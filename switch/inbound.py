"""Reading inbound messages: hash, parse, validate and view, into plain picklable data.

This is the CPU-heavy half of handling a message, and it needs nothing but the bytes, so
the engine can run it anywhere: on the event loop for a small batch (latency), or in a
worker process for a large one (throughput: the worker has its own interpreter, so its
Python work runs beside the engine's instead of taking turns with it). What comes back
is an `Inbound`: the digest, the message type, the schema issues, and the typed views the
engine decides on; no lxml tree crosses the process boundary.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Final

from lxml import etree

from switch import heap
from switch.iso20022 import (
    MessageType,
    ParseLimits,
    SchemaIssue,
    UnusableMessage,
    build,
    default_registry,
    parse,
    validate,
    views,
)
from switch.iso20022.registry import SchemaRegistry
from switch.iso20022.views import Agent
from switch.records import pickled_by_position
from switch.security.messages import MessageSecurity

Body = (
    views.CreditTransfer
    | views.StatusReport
    | views.StatusRequest
    | views.MessageReject
    | views.SystemEvent
    | views.IdentificationVerificationRequest
)


@views.view
class TransferRefs:
    """Best-effort references of a pacs.008 that cannot be cleared, for the RJCT it gets."""

    msg_id: str
    end_to_end_id: str | None
    tx_id: str | None
    uetr: str | None


@pickled_by_position
@dataclass(slots=True)
class Inbound:
    """One inbound message, read: everything the engine decides on, as plain data."""

    digest: str
    mtype: MessageType | None = None
    """None when the bytes are not a usable message (see `unusable`)."""
    unusable: str | None = None
    """Why the bytes are not a usable ISO 20022 message (answered with admi.002)."""
    complete: bool = False
    """The envelope holds both an AppHdr and a Document."""
    issues: list[SchemaIssue] = field(default_factory=list)
    header: views.Header | None = None
    """The AppHdr's view; None when it is missing or breaks its schema."""
    body: Body | None = None
    """The Document's view; None when there are schema issues or the type has no view."""
    view_error: str | None = None
    """The Document is schema-valid but cannot be read for clearing (why)."""
    forward: bytes | None = None
    """A clearable pacs.008's Document as the creditor agent gets it. When it pays an
    alias, a template: `forward_marks` stand where the resolved agent and account go."""
    forward_marks: tuple[str, str] | None = None
    """(creditor agent mark, account mark) in a pacs.008 paying an alias (`resolved`)."""
    uses_directory: bool = False
    """The message needs the alias directory (a pacs.008 paying an alias, a lookup)."""
    refs: TransferRefs | None = None
    """For a pacs.008 that breaks its schema: its references, as far as they can be found."""
    signature: tuple[str, str] | None = None
    """Why the signature is refused: (DS0B | DS0C | DS0D, reason); None when it verified
    or when the switch runs without message security (in-process demo and bench)."""


# A pacs.008 is read apart (`read`): its view also hands over the elements its
# forwarding copy changes.
_BODY_VIEWS: Final[dict[MessageType, Callable[[etree._Element], Body]]] = {
    MessageType.PACS_002: views.status_report,
    MessageType.PACS_028: views.status_request,
    MessageType.ADMI_002: views.message_reject,
    MessageType.ADMI_004: views.system_event,
    MessageType.ACMT_023: views.identification_verification_request,
}


def read(
    data: bytes,
    sender: str,
    limits: ParseLimits,
    registry: SchemaRegistry,
    security: MessageSecurity | None = None,
    *,
    validated: bool = False,
) -> Inbound:
    """Read one message's bytes from `sender` into an `Inbound` (never raises for bad input).

    With `security`, the signature is checked first (RULEBOOK §3: authenticate, verify,
    then validate); a message whose signature is refused is still validated, so that its
    refusal can name its references, but no view of its body is offered for clearing.
    `validated` says the bytes were already validated against the scheme schemas where
    they came from (a transaction split from a batch file that was validated whole).
    """
    out = Inbound(hashlib.sha256(data).hexdigest())
    try:
        msg = parse(data, limits)
    except UnusableMessage as exc:
        out.unusable = str(exc)
        return out
    out.mtype = mtype = msg.mtype
    hdr_el, doc_el = msg.header, msg.document
    if hdr_el is None or doc_el is None:
        return out
    out.complete = True
    if security is not None:
        root = hdr_el.getparent()
        assert root is not None
        out.signature = security.check(root, sender, datetime.now(UTC))
    out.issues = issues = [] if validated else validate(msg, registry)
    try:
        if not any(i.part == "AppHdr" for i in issues):
            out.header = views.header(hdr_el)
        if issues or out.signature is not None:
            if mtype is MessageType.PACS_008:
                out.refs = _refs(doc_el)
            return out
        if mtype is MessageType.PACS_008:
            found = views.Found()
            out.body = ct = views.credit_transfer(doc_el, found)
            _forward(out, ct, doc_el, found)
            return out
        body_view = _BODY_VIEWS.get(mtype)
        if body_view is not None:
            out.body = body_view(doc_el)
        out.uses_directory = mtype is MessageType.ACMT_023
    except views.ViewError as exc:
        out.view_error = str(exc)
        out.body = None
        if mtype is MessageType.PACS_008:
            out.refs = _refs(doc_el)
    return out


def _forward(
    out: Inbound, ct: views.CreditTransfer, doc_el: etree._Element, found: views.Found
) -> None:
    """The forwarding copy of a pacs.008 (a template to fill in when it pays an alias);
    `found`: the elements the view found in `doc_el`."""
    tx = ct.transactions[0]
    account = tx.creditor_account
    if account is None or account.proxy is None:
        out.forward = build.forward_credit_transfer(doc_el)
        return
    if account.other_id is None:
        raise views.ViewError(
            "CdtrAcct/Prxy names an alias: CdtrAcct/Id/Othr/Id must be given (NOTPROVIDED)"
        )
    # Unpredictable marks, so that no text the debtor agent wrote can stand for one.
    nonce = secrets.token_hex(8)
    agent_mark, account_mark = f"RTPSWAGT{nonce}", f"RTPSWACC{nonce}"
    named = (
        Agent(bicfi=agent_mark)
        if tx.creditor_agent.bicfi is not None
        else Agent(member_id=agent_mark, clearing_system=tx.creditor_agent.clearing_system)
    )
    # The views are read and nothing else reads the tree: the template is made in it.
    out.forward = build.forward_credit_transfer(
        doc_el,
        creditor_agent=named,
        instructed_agent=named,
        creditor_account_id=account_mark,
        in_place=True,
        found=found,
    )
    out.forward_marks = (agent_mark, account_mark)
    out.uses_directory = True


def resolved(inbound: Inbound, agent_id: str, account: str) -> bytes:
    """The forwarding copy of a pacs.008 paying an alias, with the resolved agent and account.

    `agent_id` is the owner's BICFI or member id, as the debtor agent named the creditor
    agent; both values are plain identifiers (no XML escaping needed).
    """
    assert inbound.forward is not None and inbound.forward_marks is not None
    agent_mark, account_mark = inbound.forward_marks
    return inbound.forward.replace(agent_mark.encode(), agent_id.encode()).replace(
        account_mark.encode(), account.encode()
    )


def read_batch(
    items: Sequence[tuple[str, bytes]],
    limits: ParseLimits,
    registry: SchemaRegistry,
    security: MessageSecurity | None = None,
    *,
    verified: frozenset[int] = frozenset(),
) -> list[Inbound]:
    """`read` each (sender, bytes) of `items`.

    `verified` holds the positions of items already verified and validated where they
    came from (the transactions of a batch file that was checked whole, signature and
    schemas): they are read without either check again.
    """
    if security is not None:
        security.refresh()
    return [
        read(data, sender, limits, registry, security)
        if i not in verified
        else read(data, sender, limits, registry, None, validated=True)
        for i, (sender, data) in enumerate(items)
    ]


def sign_batch(messages: Sequence[bytes], security: MessageSecurity) -> list[bytes]:
    """Each of `messages` signed with the switch's key."""
    return [security.sign(m) for m in messages]


# --- in a reader process --------------------------------------------------------------

_security: MessageSecurity | None = None


def read_in_reader(
    items: Sequence[tuple[str, bytes]],
    limits: ParseLimits,
    verified: frozenset[int] = frozenset(),
) -> list[Inbound]:
    """`read_batch` in a reader process, with its own registry and message security."""
    return read_batch(items, limits, default_registry(), _security, verified=verified)


def sign_in_reader(messages: Sequence[bytes]) -> list[bytes]:
    """`sign_batch` in a reader process."""
    if _security is None:
        raise RuntimeError("this reader process was started without message security")
    return sign_batch(messages, _security)


def _warm_up() -> None:
    """Compile the schemas in a fresh worker before the first batch needs them; then
    settle its collector as the engine's (switch.heap)."""
    default_registry().load_all()
    heap.settle()


def _exit_with(parent: int) -> None:
    """End this reader process when the engine's process is gone (even after kill -9)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _init_reader(parent: int, pki_dir: str | None, switch_id: str | None) -> None:
    global _security
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    if pki_dir is not None and switch_id is not None:
        _security = MessageSecurity(Path(pki_dir), switch_id)


async def start_workers(count: int, security: MessageSecurity | None = None) -> Executor:
    """A pool of `count` reader processes, started and with their schemas compiled.

    Waiting here keeps the first large batch from waiting on a cold worker while the
    deadlines of forwarded payments run.
    """
    pool = ProcessPoolExecutor(
        max_workers=count,
        mp_context=get_context("spawn"),
        initializer=_init_reader,
        initargs=(
            os.getpid(),
            None if security is None else str(security.pki_dir),
            None if security is None else security.switch_id,
        ),
    )
    await asyncio.gather(*(asyncio.wrap_future(pool.submit(_warm_up)) for _ in range(count)))
    return pool


def _find_text(doc: etree._Element, parent: str, name: str) -> str | None:
    found = doc.xpath(f"string((//*[local-name()='{parent}']/*[local-name()='{name}'])[1])")
    text = str(found).strip()
    return text[:35] or None


def _refs(doc: etree._Element) -> TransferRefs:
    return TransferRefs(
        msg_id=_find_text(doc, "GrpHdr", "MsgId") or "NOTPROVIDED",
        end_to_end_id=_find_text(doc, "PmtId", "EndToEndId"),
        tx_id=_find_text(doc, "PmtId", "TxId"),
        uetr=_find_text(doc, "PmtId", "UETR"),
    )
