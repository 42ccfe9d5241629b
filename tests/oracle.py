"""The test oracle: the ISO 20022 base schemas from the catalogue, beside the checkout.

Every message the switch emits must be valid against the base schema of its message
definition (and against the scheme's own). Tests only: the switch never loads these.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

from switch.iso20022 import MessageType, parse

BASE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "iso20022-base"


@cache
def base_schema(mtype: MessageType) -> etree.XMLSchema:
    """The compiled ISO base schema of `mtype`."""
    path = BASE_DIR / f"{mtype.value}.xsd"
    if not path.is_file():
        raise FileNotFoundError(
            f"ISO base schema missing: {path} (shared/ must sit beside the repo)"
        )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(path), parser))


def base_errors(raw: bytes) -> list[str]:
    """Every base-schema error of a business message (AppHdr and Document), as text."""
    msg = parse(raw)
    found: list[str] = []
    for el, mtype in ((msg.header, MessageType.HEAD_001), (msg.document, msg.mtype)):
        if el is None:
            continue
        schema = base_schema(mtype)
        if not schema.validate(el):
            log: etree._ListErrorLog = schema.error_log
            found += [f"{mtype.value}: {e.message}" for e in log]
    return found
