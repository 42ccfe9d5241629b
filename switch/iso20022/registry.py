"""Schema registry: the scheme's XSDs, compiled once, found by message namespace.

A message's type is its namespace (`urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08`);
the registry maps every supported namespace to its message definition identifier and
to the compiled lxml `XMLSchema` of the scheme's usage guideline in
`schemas/iso20022/`. Compilation happens on first use and is cached for the process:
the hot path only ever calls an already compiled validator.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Final

from lxml import etree

ISO_NS_PREFIX: Final = "urn:iso:std:iso:20022:tech:xsd:"
ENVELOPE_NS: Final = "urn:rtpswitch:xsd:bizmsg.001"
"""Namespace of the scheme's transport envelope, `BizMsg`: one AppHdr plus one Document."""


class MessageType(StrEnum):
    """The ISO 20022 message definitions the message layer reads and writes."""

    HEAD_001 = "head.001.001.02"
    PACS_008 = "pacs.008.001.08"
    PACS_002 = "pacs.002.001.10"
    PACS_028 = "pacs.028.001.03"
    ADMI_002 = "admi.002.001.01"
    ADMI_004 = "admi.004.001.02"
    ACMT_023 = "acmt.023.001.04"
    ACMT_024 = "acmt.024.001.04"
    CAMT_053 = "camt.053.001.08"

    @property
    def namespace(self) -> str:
        """The XML namespace of this message definition."""
        return ISO_NS_PREFIX + self.value

    @property
    def family(self) -> str:
        """The business area and message number, e.g. `pacs.008`."""
        return self.value[:8]


NAMESPACES: Final[Mapping[str, MessageType]] = {t.namespace: t for t in MessageType}
"""Message type by namespace."""


@dataclass(frozen=True, slots=True)
class UnknownMessageType(Exception):
    """A namespace that names no message the scheme supports."""

    namespace: str

    def __str__(self) -> str:
        shown = self.namespace or "(no namespace)"
        return f"unknown message namespace {shown}"


def message_type(namespace: str) -> MessageType:
    """The message type whose namespace is `namespace`, or UnknownMessageType."""
    try:
        return NAMESPACES[namespace]
    except KeyError:
        raise UnknownMessageType(namespace) from None


def schema_dir() -> Path:
    """Directory holding the scheme's XSDs (installed package data or the source tree)."""
    source = Path(__file__).resolve().parents[2] / "schemas" / "iso20022"
    if source.is_dir():
        return source
    return Path(str(resources.files("switch.schemas") / "iso20022"))


class SchemaRegistry:
    """Compiled scheme schemas, one per message type, loaded once and shared."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or schema_dir()
        self._schemas: dict[MessageType, etree.XMLSchema] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """Where the XSDs are read from."""
        return self._dir

    def path(self, mtype: MessageType) -> Path:
        """Path of the scheme XSD for `mtype`."""
        return self._dir / f"{mtype.value}.xsd"

    def schema(self, mtype: MessageType) -> etree.XMLSchema:
        """The compiled schema for `mtype` (compiled on first use)."""
        found = self._schemas.get(mtype)
        if found is not None:
            return found
        with self._lock:
            found = self._schemas.get(mtype)
            if found is None:
                parser = etree.XMLParser(resolve_entities=False, no_network=True)
                doc = etree.parse(str(self.path(mtype)), parser)
                found = etree.XMLSchema(doc)
                self._schemas[mtype] = found
            return found

    def load_all(self) -> None:
        """Compile every schema now (a switch does this at start-up)."""
        for mtype in MessageType:
            self.schema(mtype)


_default: SchemaRegistry | None = None


def default_registry() -> SchemaRegistry:
    """The process-wide registry over the scheme schemas shipped with the switch."""
    global _default
    if _default is None:
        _default = SchemaRegistry()
    return _default
