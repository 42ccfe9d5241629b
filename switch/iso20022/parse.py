"""Hardened parsing of inbound bytes into a classified, not yet trusted, message.

Theory: XML from a participant is hostile until proven otherwise (RULEBOOK §6). Bytes
pass four gates before any business code sees them, each failing with its own
`UnusableMessage` subclass (answered with admi.002, since no pacs.002 is possible):

1. size: empty input and input over the size limit are refused unread;
2. well-formedness, with a parser that never loads a DTD, never expands an entity and
   never touches the network; a document that carries a DOCTYPE at all is refused;
3. depth: a tree deeper than the limit is refused (libxml2 itself stops at 256 levels;
   a stricter configured limit is checked on the parsed tree);
4. shape: the root must be a scheme envelope (`BizMsg`: one AppHdr then one Document), a
   bare Document or a bare AppHdr, in a namespace the registry knows.

Schema validation is a separate step (`validate`), so a caller can tell "unusable"
(admi.002) from "usable but invalid" (pacs.002 RJCT FF01). Every schema issue carries
the line and the element path it concerns.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from switch.iso20022.registry import (
    ENVELOPE_NS,
    MessageType,
    SchemaRegistry,
    UnknownMessageType,
    default_registry,
    message_type,
)

DEFAULT_MAX_BYTES: Final = 1 << 20
"""Default size limit of one real-time message (1 MiB); batch files set their own."""
PARSER_MAX_DEPTH: Final = 256
"""libxml2's own nesting limit (XML_PARSE_HUGE off): enforced inside the parser, at no cost."""
DEFAULT_MAX_DEPTH: Final = PARSER_MAX_DEPTH
"""Default nesting limit; the deepest legitimate path of the scheme's messages is ~20.
A stricter limit is checked after parsing, at a small cost per message."""

HEAD_NS: Final = MessageType.HEAD_001.namespace
_APPHDR: Final = f"{{{HEAD_NS}}}AppHdr"
_BIZMSG: Final = f"{{{ENVELOPE_NS}}}BizMsg"


class UnusableMessage(Exception):
    """Input that cannot be read as a scheme message at all (answered with admi.002)."""

    kind: str = "unusable"

    def __init__(self, text: str, *, line: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.line = line

    def __str__(self) -> str:
        if self.line is None or f"line {self.line}" in self.text:
            return self.text
        return f"line {self.line}: {self.text}"


class EmptyMessage(UnusableMessage):
    """The input holds nothing but whitespace."""

    kind = "empty"


class MessageTooLarge(UnusableMessage):
    """The input exceeds the size limit."""

    kind = "too-large"


class NotWellFormed(UnusableMessage):
    """The input is not well-formed XML."""

    kind = "not-xml"


class ForbiddenDTD(UnusableMessage):
    """The input carries a DOCTYPE (DTDs and entity declarations are forbidden)."""

    kind = "dtd"


class MessageTooDeep(UnusableMessage):
    """The element tree nests deeper than the depth limit."""

    kind = "too-deep"


class UnknownNamespace(UnusableMessage):
    """The root (or the enveloped Document) is in a namespace the scheme does not know."""

    kind = "unknown-namespace"


class BadEnvelope(UnusableMessage):
    """A `BizMsg` envelope that does not hold exactly one AppHdr then one Document."""

    kind = "bad-envelope"


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds applied to untrusted input."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A well-formed, classified message: the parsed AppHdr and Document, not yet validated."""

    raw: bytes
    mtype: MessageType
    header: etree._Element | None
    document: etree._Element | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaIssue:
    """One schema violation: where it is and what is wrong."""

    part: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path}: {self.message}"


_local = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


_depth_checks: dict[int, etree.XPath] = {}


def _too_deep(root: etree._Element, max_depth: int) -> bool:
    check = _depth_checks.get(max_depth)
    if check is None:
        check = etree.XPath("boolean(/" + "/*" * (max_depth + 1) + ")")
        _depth_checks[max_depth] = check
    return bool(check(root))


def parse(data: bytes, limits: ParseLimits = ParseLimits()) -> Message:
    """Parse untrusted `data` into a classified Message; raise UnusableMessage if it is not one."""
    if len(data) > limits.max_bytes:
        raise MessageTooLarge(f"message is {len(data)} bytes, over the limit of {limits.max_bytes}")
    if not data or data.isspace():
        raise EmptyMessage("message is empty")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        if b"<!DOCTYPE" in data:
            raise ForbiddenDTD("DOCTYPE declarations (DTDs, entities) are not allowed") from None
        if "Excessive depth" in str(exc.msg):
            raise MessageTooDeep(
                f"elements nest deeper than {PARSER_MAX_DEPTH} levels", line=line
            ) from None
        raise NotWellFormed(f"not well-formed XML: {exc.msg}", line=line) from None
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise ForbiddenDTD("DOCTYPE declarations (DTDs, entities) are not allowed")
    if limits.max_depth < PARSER_MAX_DEPTH and _too_deep(root, limits.max_depth):
        raise MessageTooDeep(f"elements nest deeper than {limits.max_depth} levels")
    return _classify(data, root)


def _line(el: etree._Element) -> int | None:
    """The source line of `el` (lxml's stubs type it loosely)."""
    line: Any = el.sourceline
    return int(line) if isinstance(line, int) else None


def _ns_of(el: etree._Element) -> tuple[str, str]:
    q = etree.QName(el)
    return q.namespace or "", q.localname


def _doc_type(el: etree._Element) -> MessageType:
    ns, local = _ns_of(el)
    if local != "Document":
        where = f" in namespace {ns}" if ns else ""
        raise UnknownNamespace(
            f"root element <{local}>{where} is not an ISO 20022 Document, AppHdr or BizMsg",
            line=_line(el),
        )
    try:
        mtype = message_type(ns)
    except UnknownMessageType as exc:
        raise UnknownNamespace(str(exc), line=_line(el)) from None
    if mtype is MessageType.HEAD_001:
        raise UnknownNamespace(f"a Document cannot be in the header namespace {ns}")
    return mtype


def _classify(data: bytes, root: etree._Element) -> Message:
    tag = root.tag
    if tag == _BIZMSG:
        children = [c for c in root if isinstance(c.tag, str)]
        if len(children) != 2 or children[0].tag != _APPHDR:
            raise BadEnvelope(
                "BizMsg must hold exactly one AppHdr (head.001.001.02) followed by one Document",
                line=_line(root),
            )
        mtype = _doc_type(children[1])
        return Message(raw=data, mtype=mtype, header=children[0], document=children[1])
    if tag == _APPHDR:
        return Message(raw=data, mtype=MessageType.HEAD_001, header=root, document=None)
    return Message(raw=data, mtype=_doc_type(root), header=None, document=root)


_CLARK: Final = re.compile(r"\{[^}]*\}")


def _readable_path(root: etree._Element, raw_path: str | None) -> str:
    """`/BizMsg/Document/.../TxSts` for libxml2's positional `/*/*[2]/*[5]`.

    libxml2 reports paths as if the validated element were the document root.
    """
    if not raw_path or not raw_path.startswith("/*"):
        return raw_path or "/"
    relative = raw_path[2:].lstrip("/")
    try:
        found = root.xpath(relative) if relative else [root]
    except etree.XPathError:
        return raw_path
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return raw_path
    el: etree._Element | None = found[0]
    names: list[str] = []
    while el is not None:
        names.append(etree.QName(el).localname)
        el = el.getparent()
    return "/" + "/".join(reversed(names))


def _issues(part: str, root: etree._Element, log: etree._ListErrorLog) -> list[SchemaIssue]:
    return [
        SchemaIssue(
            part=part,
            line=e.line,
            path=_readable_path(root, e.path),
            message=_CLARK.sub("", e.message),
        )
        for e in log
    ]


def validate(msg: Message, registry: SchemaRegistry | None = None) -> list[SchemaIssue]:
    """Every schema issue of `msg` against the scheme schemas; empty when it is valid."""
    reg = registry or default_registry()
    found: list[SchemaIssue] = []
    if msg.header is not None:
        head = reg.schema(MessageType.HEAD_001)
        if not head.validate(msg.header):
            found.extend(_issues("AppHdr", msg.header, head.error_log))
        else:
            found.extend(_header_matches(msg))
    if msg.document is not None:
        schema = reg.schema(msg.mtype)
        if not schema.validate(msg.document):
            found.extend(_issues("Document", msg.document, schema.error_log))
    return found


def _header_matches(msg: Message) -> list[SchemaIssue]:
    if msg.header is None or msg.document is None:
        return []
    el = msg.header.find(f"{{{HEAD_NS}}}MsgDefIdr")
    declared = (el.text or "").strip() if el is not None else ""
    if declared == msg.mtype.value:
        return []
    line = (_line(el) or 0) if el is not None else 0
    return [
        SchemaIssue(
            part="AppHdr",
            line=line,
            path="/BizMsg/AppHdr/MsgDefIdr",
            message=f"MsgDefIdr {declared!r} does not name the enclosed Document {msg.mtype.value}",
        )
    ]
