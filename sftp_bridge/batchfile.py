"""Reading a batch file (RULEBOOK §7) as a stream: check it whole, then split it.

A batch file is one signed `BizMsg`: the participant's AppHdr (`MsgDefIdr`
pacs.008.001.08, its XML-DSig in `AppHdr/Sgntr`) and a pacs.008 Document with one group
header and any number of `CdtTrfTxInf`. It can be far larger than memory should hold, so
it is never built as one tree: `inspect` reads it once with lxml's iterparse, validating
against the scheme schemas as it goes and dropping each transaction once counted, then
streams its canonical form through SHA-256 to verify the signature
(`switch.security.filesig`); `split` reads it again and yields each transaction as the
single-transaction message a bank would have sent in real time (the file's AppHdr
without its signature, the group header with `NbOfTxs` 1, the transaction), which the
engine clears under the very rules of the real-time channel.

A file is refused whole (`FileRefused`, nothing in it cleared) when it is empty or over
the size limit, not well-formed XML, carries a DTD, is not a BizMsg with a pacs.008,
breaks the scheme schema anywhere (FF01: the first issue, with its line), comes from
another participant than the one logged in (RC01), is unsigned or badly signed (DS0B),
signed with a revoked (DS0C) or expired (DS0D) key, or when its group header does not
add up (NbOfTxs or CtrlSum against the transactions: FF01). The signature is judged
before the schema whenever the file can be read that far (authenticate, verify, then
validate: RULEBOOK §3).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from lxml import etree

from switch.iso20022 import MessageType, default_registry, views
from switch.iso20022.registry import ENVELOPE_NS, schema_dir
from switch.security.filesig import SIGNATURE_TAG, canonical_digest
from switch.security.xmldsig import SignatureRejected, Verifier

__all__ = [
    "UNUSABLE",
    "BatchFile",
    "FileRefused",
    "envelope_schema",
    "file_sha256",
    "inspect",
    "split",
]

UNUSABLE: Final = "unusable"
"""The refusal code of a file that is no pacs.008 batch at all (answered with admi.002)."""

_HEAD_NS: Final = MessageType.HEAD_001.namespace
_DOC_NS: Final = MessageType.PACS_008.namespace
_BIZMSG: Final = f"{{{ENVELOPE_NS}}}BizMsg"
_APPHDR: Final = f"{{{_HEAD_NS}}}AppHdr"
_SGNTR: Final = f"{{{_HEAD_NS}}}Sgntr"
_DOCUMENT: Final = f"{{{_DOC_NS}}}Document"
_GRPHDR: Final = f"{{{_DOC_NS}}}GrpHdr"
_TX: Final = f"{{{_DOC_NS}}}CdtTrfTxInf"
_AMOUNT: Final = f"{{{_DOC_NS}}}IntrBkSttlmAmt"
_PASS1_TAGS: Final = (_BIZMSG, _APPHDR, _GRPHDR, _TX, SIGNATURE_TAG, etree.Comment, etree.PI)
"""What the first reading of a file has events for: lxml builds and validates the rest
without handing it to Python."""
_CHUNK: Final = 1 << 20
_DEFAULT_NS: Final[Any] = {None: _DOC_NS}  # lxml's stubs do not admit the None key


class FileRefused(Exception):
    """A batch file refused as a whole: `code` is an ISO reason code or `UNUSABLE`.

    `msg_id`, `created` and `count` are what could be read of the group header before
    the refusal (for the status file that answers it).
    """

    def __init__(
        self,
        code: str,
        text: str,
        *,
        msg_id: str | None = None,
        created: str | None = None,
        count: int | None = None,
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.msg_id = msg_id
        self.created = created
        self.count = count


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFile:
    """A batch file that passed `inspect`: everything needed to split and answer it."""

    path: Path
    size: int
    sha256: str
    msg_id: str
    created: str
    """GrpHdr/CreDtTm as written."""
    count: int
    header: bytes
    """The AppHdr without its `Sgntr`, as each transaction's message carries it."""
    group_header: bytes
    """The group header of one transaction (`NbOfTxs` 1, no totals)."""


@functools.cache
def envelope_schema() -> etree.XMLSchema:
    """The scheme's BizMsg envelope holding a head.001.001.02 AppHdr and a pacs.008.001.08
    Document, each as its scheme schema has it (so a whole file validates in one pass)."""
    directory = schema_dir()
    head = (directory / f"{MessageType.HEAD_001.value}.xsd").as_uri()
    doc = (directory / f"{MessageType.PACS_008.value}.xsd").as_uri()
    text = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
        xmlns:h="{_HEAD_NS}" xmlns:d="{_DOC_NS}"
        targetNamespace="{ENVELOPE_NS}" elementFormDefault="qualified">
      <xs:import namespace="{_HEAD_NS}" schemaLocation="{head}"/>
      <xs:import namespace="{_DOC_NS}" schemaLocation="{doc}"/>
      <xs:element name="BizMsg">
        <xs:complexType><xs:sequence>
          <xs:element ref="h:AppHdr"/><xs:element ref="d:Document"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:schema>"""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.fromstring(text.encode(), parser))


def _iterparse(
    path: Path,
    *,
    events: tuple[str, ...] = ("start", "end", "comment", "pi"),
    tag: Any = None,
    schema: etree.XMLSchema | None = None,
) -> etree.iterparse:
    """A streaming reading of a batch file, hardened as every reading of one is: no
    entities resolved, no DTD loaded, nothing fetched from the network."""
    return etree.iterparse(
        str(path),
        events=events,
        tag=tag,
        schema=schema,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,
        remove_blank_text=False,
    )


def _check_root(path: Path) -> None:
    """Refuse a file whose root is not the envelope, or that declares a DOCTYPE.

    Only the start of the file is read (up to its root's start tag). A file that cannot
    be read that far is left to the full reading, which says what is wrong with it.
    """
    context = _iterparse(path, events=("start",))
    try:
        _event, root = next(context)
    except (StopIteration, etree.XMLSyntaxError):
        return
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise FileRefused(UNUSABLE, "DOCTYPE declarations (DTDs, entities) are not allowed")
    if root.tag != _BIZMSG:
        raise FileRefused(
            UNUSABLE,
            f"root element {root.tag} is not a {_BIZMSG} envelope (AppHdr and a pacs.008 Document)",
        )


def _text(parent: etree._Element, local: str) -> str | None:
    el = parent.find(f"{{{_DOC_NS}}}{local}")
    return None if el is None or el.text is None else el.text.strip()


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _single(grp_hdr: etree._Element) -> bytes:
    """The group header of one transaction of the file."""
    one = copy.deepcopy(grp_hdr)
    for local in ("CtrlSum", "TtlIntrBkSttlmAmt"):
        el = one.find(f"{{{_DOC_NS}}}{local}")
        if el is not None:
            one.remove(el)
    count = one.find(f"{{{_DOC_NS}}}NbOfTxs")
    assert count is not None
    count.text = "1"
    return _inherit_namespace(etree.tostring(one, encoding="UTF-8"), "GrpHdr")


def _inherit_namespace(element: bytes, local: str) -> bytes:
    """An element serialised on its own, without the declaration of the pacs.008
    namespace it repeats (lxml writes it on the element; in the message the element
    inherits it from `Document`). Any other form (a prefixed namespace) is kept as is."""
    redundant = f'<{local} xmlns="{_DOC_NS}">'.encode()
    if element.startswith(redundant):
        return f"<{local}>".encode() + element[len(redundant) :]
    return element


def _header_without_signature(app_hdr: etree._Element) -> tuple[bytes, etree._Element | None]:
    """(the AppHdr without `Sgntr`, a copy of its `ds:Signature` or None)."""
    hdr = copy.deepcopy(app_hdr)
    signature = None
    sgntr = hdr.find(_SGNTR)
    if sgntr is not None:
        signature = next((c for c in sgntr if c.tag == SIGNATURE_TAG), None)
        if signature is not None:
            signature = copy.deepcopy(signature)
        hdr.remove(sgntr)
    return etree.tostring(hdr, encoding="UTF-8"), signature


def inspect(
    path: Path,
    participant: str,
    *,
    is_sender: Callable[[views.Header], bool],
    verifier: Verifier | None,
    at: datetime,
    max_bytes: int,
) -> BatchFile:
    """Check the batch file at `path`, completed by `participant`; raise FileRefused.

    `is_sender` says whether an AppHdr's `Fr` names the participant (by BICFI or member
    id). Without `verifier` (an embedded switch without message security) signatures are
    not checked.
    """
    size = os.stat(path).st_size
    if size == 0:
        raise FileRefused(UNUSABLE, "the file is empty")
    if size > max_bytes:
        raise FileRefused(UNUSABLE, f"the file is {size} bytes, over the limit of {max_bytes}")
    state = _Pass1()
    schema_error: str | None = None
    try:
        state.run(path, envelope_schema())
    except FileRefused:
        raise
    except etree.XMLSyntaxError as exc:
        if state.root is None or not state.schema_error(exc):
            raise FileRefused(UNUSABLE, f"not well-formed XML: {exc}") from None
        schema_error = _locate_schema_error(path) or _schema_text(exc)
    if schema_error is None and not state.closed:
        raise FileRefused(UNUSABLE, "not well-formed XML: the file ends before its root closes")
    if state.header is None or state.app_hdr is None:
        raise FileRefused(UNUSABLE, schema_error or "no AppHdr")
    refused = functools.partial(
        FileRefused, msg_id=state.msg_id, created=state.created, count=state.count_declared
    )
    if not is_sender(state.header):
        raise refused(
            "RC01",
            f"AppHdr/Fr {state.header.sender} is not the logged-in participant {participant}",
        )
    if verifier is not None:
        if state.signatures != 1 or state.signature is None:
            raise refused("DS0B", _signature_shape(state.signatures, state.signature is not None))
        try:
            digest = canonical_digest(path)
        except etree.XMLSyntaxError as exc:
            raise FileRefused(UNUSABLE, f"not well-formed XML: {exc}") from None
        try:
            verifier.verify_detached(state.signature, digest, participant, at=at)
        except SignatureRejected as exc:
            raise refused(exc.code, str(exc)) from None
    if schema_error is not None:
        raise refused("FF01", f"the file breaks the scheme schema: {schema_error}")
    if state.header.msg_def_idr != MessageType.PACS_008.value:
        raise refused(
            "FF01", f"AppHdr/MsgDefIdr {state.header.msg_def_idr}: a batch file is a pacs.008"
        )
    assert state.grp_hdr is not None and state.msg_id is not None and state.created is not None
    if state.count_declared != state.count:
        raise refused(
            "FF01", f"GrpHdr/NbOfTxs {state.count_declared} but the file holds {state.count}"
        )
    if state.ctrl_sum is not None and state.ctrl_sum != state.total:
        raise refused(
            "FF01", f"GrpHdr/CtrlSum {state.ctrl_sum} but the transactions total {state.total}"
        )
    return BatchFile(
        path=path,
        size=size,
        sha256=file_sha256(path),
        msg_id=state.msg_id,
        created=state.created,
        count=state.count,
        header=state.app_hdr,
        group_header=_single(state.grp_hdr),
    )


def _locate_schema_error(path: Path) -> str | None:
    """The first schema issue of a file that failed streaming validation, with its place.

    Streaming validation says what is wrong but not where: this reading (only for a file
    already refused) validates the AppHdr, then each transaction with the group header,
    against the scheme schemas, and names the first that breaks them, with its line.
    """
    registry = default_registry()
    head = registry.schema(MessageType.HEAD_001)
    doc = registry.schema(MessageType.PACS_008)
    grp_hdr: etree._Element | None = None
    index = 0
    try:
        for _event, el in _iterparse_end(path):
            if el.tag == _APPHDR:
                if not head.validate(copy.deepcopy(el)):
                    return _first(head, "AppHdr")
            elif el.tag == _GRPHDR:
                grp_hdr = copy.deepcopy(el)
            elif el.tag == _TX:
                index += 1
                skeleton = etree.Element(_DOCUMENT, nsmap=_DEFAULT_NS)
                body = etree.SubElement(skeleton, f"{{{_DOC_NS}}}FIToFICstmrCdtTrf")
                if grp_hdr is not None:
                    body.append(copy.deepcopy(grp_hdr))
                body.append(copy.deepcopy(el))
                if not doc.validate(skeleton):
                    return _first(doc, f"transaction {index}")
                _drop(el)
    except etree.XMLSyntaxError:
        return None
    return None


def _first(schema: etree.XMLSchema, where: str) -> str:
    log: etree._ListErrorLog = schema.error_log
    error = log[0]
    message = error.message.replace(f"{{{_DOC_NS}}}", "").replace(f"{{{_HEAD_NS}}}", "")
    return f"{where} (line {error.line}): {message}"


def _iterparse_end(path: Path) -> etree.iterparse:
    return _iterparse(path, events=("end",), tag=(_APPHDR, _GRPHDR, _TX))


def _schema_text(exc: etree.XMLSyntaxError) -> str:
    text = str(exc.msg) if exc.msg else str(exc)
    return text.replace(f"{{{_DOC_NS}}}", "").replace(f"{{{_HEAD_NS}}}", "")


def _signature_shape(count: int, in_sgntr: bool) -> str:
    if count == 0:
        return "the file is not signed: no ds:Signature in AppHdr/Sgntr"
    if count > 1:
        return f"{count} ds:Signature elements; exactly one is allowed, in AppHdr/Sgntr"
    return "ds:Signature is not the only content of AppHdr/Sgntr"


class _Pass1:
    """What the first reading of a file gathers (see `inspect`)."""

    def __init__(self) -> None:
        self.root: etree._Element | None = None
        self.header: views.Header | None = None
        self.app_hdr: bytes | None = None
        self.signature: etree._Element | None = None
        self.signatures = 0
        self.grp_hdr: etree._Element | None = None
        self.msg_id: str | None = None
        self.created: str | None = None
        self.count_declared: int | None = None
        self.ctrl_sum: Decimal | None = None
        self.count = 0
        self.total = Decimal(0)
        self.context: etree.iterparse | None = None
        self.closed = False

    def schema_error(self, exc: etree.XMLSyntaxError) -> bool:
        """Whether `exc` is a schema-validity error (not a well-formedness one)."""
        last = self.context.error_log.last_error if self.context is not None else None
        return last is not None and last.domain == etree.ErrorDomains.SCHEMASV

    def run(self, path: Path, schema: etree.XMLSchema) -> None:
        _check_root(path)
        # Events only for the elements this reading looks at (and for any comment or
        # processing instruction): every other element is still parsed and validated,
        # but costs no trip through Python.
        self.context = context = _iterparse(path, schema=schema, tag=_PASS1_TAGS)
        for event, el in context:
            if event == "comment" or event == "pi":
                what = "comment" if event == "comment" else "processing instruction"
                raise FileRefused("DS0B", f"{what} in the file: it is not covered by the signature")
            if self.root is None:
                self.root = el.getroottree().getroot()
            if event == "start":
                if el.tag == SIGNATURE_TAG:
                    self.signatures += 1
                continue
            tag = el.tag
            if el is self.root:
                self.closed = True
            elif tag == _TX:
                self._transaction(el)
            elif tag == _APPHDR and el.getparent() is self.root:
                self._app_hdr(el)
            elif tag == _GRPHDR:
                self._grp_hdr(el)

    def _app_hdr(self, el: etree._Element) -> None:
        try:
            self.header = views.header(el)
        except views.ViewError as exc:
            raise FileRefused("FF01", f"AppHdr: {exc}") from None
        self.app_hdr, signature = _header_without_signature(el)
        sgntr = el.find(_SGNTR)
        if (
            signature is not None
            and sgntr is not None
            and len(sgntr) == 1
            and not (sgntr.text or "").strip()
            and not (sgntr[0].tail or "").strip()
        ):
            self.signature = signature

    def _grp_hdr(self, el: etree._Element) -> None:
        self.grp_hdr = copy.deepcopy(el)
        self.msg_id = _text(el, "MsgId")
        self.created = _text(el, "CreDtTm")
        declared = _text(el, "NbOfTxs")
        self.count_declared = int(declared) if declared and declared.isdigit() else None
        ctrl = _text(el, "CtrlSum")
        if ctrl is not None:
            try:
                self.ctrl_sum = Decimal(ctrl)
            except InvalidOperation:
                self.ctrl_sum = None

    def _transaction(self, el: etree._Element) -> None:
        self.count += 1
        amount = el.find(_AMOUNT)
        if amount is not None and amount.text:
            with contextlib.suppress(InvalidOperation):
                self.total += Decimal(amount.text.strip())
        _drop(el)


def _drop(el: etree._Element) -> None:
    """Free a transaction already read, and any text or siblings before it."""
    el.clear()
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


def split(bf: BatchFile, *, skip: Collection[int] = ()) -> Generator[tuple[int, bytes], None, None]:
    """(index, message) for each transaction of an inspected file, in file order, but
    those whose index is in `skip` (already cleared); each message is a BizMsg of the
    file's AppHdr (unsigned: the file's signature covers it) and one transaction."""
    open_doc = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<BizMsg xmlns="{ENVELOPE_NS}">'.encode()
        + bf.header
        + f'<Document xmlns="{_DOC_NS}"><FIToFICstmrCdtTrf>'.encode()
        + bf.group_header
    )
    close_doc = b"</FIToFICstmrCdtTrf></Document></BizMsg>"
    context = _iterparse(bf.path, events=("end",), tag=_TX)
    for index, (_event, el) in enumerate(context):
        if index not in skip:
            el.tail = None
            tx = _inherit_namespace(etree.tostring(el, encoding="UTF-8"), "CdtTrfTxInf")
            yield index, open_doc + tx + close_doc
        _drop(el)
