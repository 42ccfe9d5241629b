"""The example business messages are valid for the scheme and for ISO 20022 alike.

Theory: an example in `examples/` is a transport message, a `BizMsg` envelope holding
one AppHdr (head.001.001.02) then one Document; each part is validated on its own
against the schema its namespace names. A scheme schema being a restriction of its base
schema, whatever the scheme accepts the base must accept too; the mutated credit
transfers below show the other direction: what the scheme narrows away (RULEBOOK §2)
fails the scheme schema, and, except the negative amount, is still ISO 20022 valid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from tools.usage_guideline import ISO_NS_PREFIX, MESSAGES

REPO = Path(__file__).resolve().parents[2]
BASE_DIR = REPO / ".." / "shared" / "iso20022-base"
SCHEME_DIR = REPO / "schemas" / "iso20022"
EXAMPLES = sorted((REPO / "examples").glob("*.xml"))
ENVELOPE = "{urn:rtpswitch:xsd:bizmsg.001}BizMsg"
HEAD = ISO_NS_PREFIX + "head.001.001.02"
PACS008 = ISO_NS_PREFIX + "pacs.008.001.08"
DIRS = {"scheme": SCHEME_DIR, "base": BASE_DIR}


@cache
def schema(which: str, message: str) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(DIRS[which] / f"{message}.xsd"), parser))


def parts(path: Path) -> tuple[etree._Element, etree._Element]:
    """The AppHdr and the Document of an example, each as the root of its own tree."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.parse(str(path), parser).getroot()
    assert root.tag == ENVELOPE
    children = [copy.deepcopy(c) for c in root if isinstance(c.tag, str)]
    assert [etree.QName(c).localname for c in children] == ["AppHdr", "Document"]
    assert etree.QName(children[0]).namespace == HEAD
    return children[0], children[1]


def message_of(elem: etree._Element) -> str:
    namespace = str(etree.QName(elem).namespace)
    assert namespace.startswith(ISO_NS_PREFIX), namespace
    return namespace.removeprefix(ISO_NS_PREFIX)


def errors(which: str, elem: etree._Element) -> list[str]:
    """Validation errors of `elem` against the `which` ("scheme" or "base") schema."""
    validator = schema(which, message_of(elem))
    if validator.validate(elem):
        return []
    return str(validator.error_log).splitlines()


def test_there_is_an_example_of_every_message() -> None:
    found = {message_of(part) for path in EXAMPLES for part in parts(path)}
    assert found == set(MESSAGES)


@pytest.mark.parametrize("which", ["scheme", "base"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(example: Path, which: str) -> None:
    header, document = parts(example)
    assert errors(which, header) == []
    assert errors(which, document) == []
    assert header.findtext(f"{{{HEAD}}}MsgDefIdr") == message_of(document)


def test_batch_example_totals_add_up() -> None:
    _, document = parts(REPO / "examples" / "pacs.008-batch.xml")
    p = f"{{{PACS008}}}"
    amounts = [e.text for e in document.iter(f"{p}IntrBkSttlmAmt")]
    assert len(amounts) == 3
    header = document.find(f"{p}FIToFICstmrCdtTrf/{p}GrpHdr")
    assert header is not None
    assert header.findtext(f"{p}NbOfTxs") == "3"
    total = Decimal(str(header.findtext(f"{p}TtlIntrBkSttlmAmt")))
    assert sum(Decimal(str(a)) for a in amounts) == total
    assert header.findtext(f"{p}CtrlSum") == str(total)


# --- what the scheme narrows away -------------------------------------------------------

Mutation = Callable[[etree._Element], None]


def _each(xpath: str, change: Callable[[etree._Element], None]) -> Mutation:
    def mutate(document: etree._Element) -> None:
        found = document.xpath(xpath, namespaces={"p": PACS008})
        assert isinstance(found, list) and found, xpath
        for elem in found:
            assert isinstance(elem, etree._Element)
            change(elem)

    return mutate


def _set_text(value: str) -> Callable[[etree._Element], None]:
    def change(elem: etree._Element) -> None:
        elem.text = value

    return change


def _remove(elem: etree._Element) -> None:
    parent = elem.getparent()
    assert parent is not None
    parent.remove(elem)


AMOUNTS = "//p:TtlIntrBkSttlmAmt | //p:CdtTrfTxInf/p:IntrBkSttlmAmt"

MUTATIONS: dict[str, tuple[Mutation, bool]] = {
    # name: (mutation, still valid against the ISO base schema)
    "EUR currency": (_each(AMOUNTS, lambda e: e.set("Ccy", "EUR")), True),
    "amount 0": (_each(AMOUNTS, _set_text("0.00")), True),
    "negative amount": (_each(AMOUNTS, _set_text("-1250.00")), False),
    # fractionDigits constrains the value, so "1250.000" would pass: the third decimal
    # must be significant.
    "3 decimals": (_each(AMOUNTS, _set_text("1250.125")), True),
    "SttlmMtd INDA": (_each("//p:SttlmMtd", _set_text("INDA")), True),
    "ChrgBr DEBT": (_each("//p:ChrgBr", _set_text("DEBT")), True),
    "UETR removed": (_each("//p:PmtId/p:UETR", _remove), True),
}


@pytest.mark.parametrize("case", MUTATIONS, ids=list(MUTATIONS))
def test_narrowed_away_credit_transfer_fails_the_scheme(case: str) -> None:
    mutate, base_accepts = MUTATIONS[case]
    _, document = parts(REPO / "examples" / "pacs.008-bicfi.xml")
    assert errors("scheme", document) == []
    mutate(document)
    assert errors("scheme", document) != []
    assert (errors("base", document) == []) is base_accepts
