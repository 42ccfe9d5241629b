"""Build the scheme's usage-guideline schemas from the ISO 20022 base schemas.

Theory of operation. The scheme does not write its XSDs by hand: each one is the ISO
20022 base schema of the message, read with lxml, with a short list of narrowings
applied, and written back in a stable, pretty-printed form. A narrowing only ever
removes documents from the accepted set:

* a new named type derived by restriction from a base type (fewer enumeration values,
  fewer decimals, a tighter bound), and an element re-pointed to it;
* a `minOccurs` raised on an element (an optional element made mandatory).

Both act on one element path. A complex type met on the way that other paths share is
never edited in place: it is copied under a scheme name and only this path is
re-pointed to the copy (copy on write), so every other use of the type keeps the base
definition. Everything not narrowed is kept exactly as in the base, so rich messages
from other banks still validate.

The narrowings are a data table at the top of this module (what, where, and which
rulebook clause asks for it); the generated schema carries the same information in its
header comment and in an `xs:annotation` on every narrowed element and new type. The
base schemas are a build-time input only: the switch loads the generated files.

Usage: python tools/usage_guideline.py --base ../shared/iso20022-base --out schemas/iso20022
(add --check to verify that the committed schemas are up to date without writing).
"""

from __future__ import annotations

import argparse
import copy
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lxml import etree

# --------------------------------------------------------------------------------------
# The narrowing table
# --------------------------------------------------------------------------------------

MESSAGES: Final = (
    "head.001.001.02",
    "pacs.008.001.08",
    "pacs.002.001.10",
    "pacs.028.001.03",
    "admi.002.001.01",
    "admi.004.001.02",
    "acmt.023.001.04",
    "acmt.024.001.04",
    "camt.053.001.08",
)
"""Message definitions the scheme publishes a usage guideline for."""

SCHEME_CURRENCY: Final = "USD"
"""RULEBOOK §2: the scheme currency (2 decimals)."""

RULE_CURRENCY: Final = f"RULEBOOK §2: the currency is the scheme currency, {SCHEME_CURRENCY}."
RULE_AMOUNT: Final = (
    "RULEBOOK §2: interbank settlement amounts are in the scheme currency, with at most "
    "2 decimals, and greater than zero. The upper bound (the scheme limit) is "
    "configurable and is enforced as a business rule (AM02), not by the schema."
)
RULE_SETTLEMENT_METHOD: Final = (
    "RULEBOOK §2: SttlmMtd is CLRG, settlement through the scheme's clearing system."
)
RULE_CHARGE_BEARER: Final = "RULEBOOK §2: ChrgBr is SLEV, charges follow the service level."
RULE_UETR: Final = "RULEBOOK §2: the UETR is mandatory."
RULE_ALIAS: Final = (
    "RULEBOOK §5: a lookup (acmt.023) names the alias to resolve as the proxy of the "
    "account to verify, with its type (Prtry VPA or EVP, Cd EMAL or TELE) and its id."
)
RULE_LOOKUP_ANSWER: Final = (
    "RULEBOOK §5: a lookup answer (acmt.024) names the lookup (acmt.023) it answers by "
    "its message id."
)
STATEMENT: Final = "camt.053.001.08"
"""RULEBOOK §2: the end-of-day statement."""
RULE_STATEMENT: Final = (
    "RULEBOOK §1: at each business day's rollover every participant receives a statement "
    "(camt.053) of its settlement position, numbered (ElctrncSeqNb), dated (CreDtTm) and "
    "covering the day from one rollover to the next (FrToDt)."
)
RULE_STATEMENT_ACCOUNT: Final = (
    "RULEBOOK §1: the account of a statement is the participant's settlement position "
    "at the switch; its servicer is the switch, named by its BICFI."
)
RULE_STATEMENT_BALANCE: Final = (
    "RULEBOOK §1: a statement gives the opening (OPBD) and closing (CLBD) booked balance "
    f"of the position, in the scheme currency, {SCHEME_CURRENCY}, with at most 2 decimals."
)
RULE_STATEMENT_ENTRY: Final = (
    "RULEBOOK §1: every entry of a statement is a movement of the append-only journal, "
    "booked (BOOK), final and of immediate value (BookgDt, ValDt), in the scheme currency "
    "with at most 2 decimals and greater than zero, named by its journal reference "
    "(AcctSvcrRef) and its journal kind (BkTxCd/Prtry)."
)
RULE_STATEMENT_SUMMARY: Final = (
    "RULEBOOK §1: a statement summarises the day's credit and debit entries (TxsSummry), "
    "so that the closing balance is the opening balance plus credits minus debits."
)
# Not narrowed by the schema, because the tool narrows no choice and no maxOccurs: the
# assigner and assignee of acmt.023/acmt.024 are agents (Assgnr/Agt, Assgne/Agt, not
# Pty), and a real-time lookup holds one verification. Both are business rules of the
# switch (the typed view refuses a party where an agent is needed).


@dataclass(frozen=True, kw_only=True, slots=True)
class SimpleRestriction:
    """A new simple type: `base` (a type of the message schema) restricted by facets."""

    message: str
    name: str
    base: str
    facets: tuple[tuple[str, str], ...]
    rule: str

    def summary(self) -> str:
        """One line describing the type."""
        shown = ", ".join(f"{facet} {value}" for facet, value in self.facets)
        return f"{self.name}: restriction of {self.base} ({shown})"


@dataclass(frozen=True, kw_only=True, slots=True)
class Attribute:
    """An attribute of a new simple-content complex type."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class SimpleContentType:
    """A new complex type with simple content `content` and the given attributes."""

    message: str
    name: str
    content: str
    attributes: tuple[Attribute, ...]
    rule: str

    def summary(self) -> str:
        """One line describing the type."""
        shown = ", ".join(f"@{a.name} {a.type}" for a in self.attributes)
        return f"{self.name}: {self.content} with {shown}"


NewType = SimpleRestriction | SimpleContentType


@dataclass(frozen=True, kw_only=True, slots=True)
class Narrowing:
    """One narrowing: the element at `path` gets a new `type` and/or a higher `min_occurs`.

    `path` is a slash-separated element path from the schema's root element.
    """

    message: str
    path: str
    rule: str
    type: str | None = None
    min_occurs: int | None = None

    def summary(self) -> str:
        """What changes, in a few words."""
        changes = []
        if self.type is not None:
            changes.append(f"type {self.type}")
        if self.min_occurs is not None:
            changes.append(f"minOccurs {self.min_occurs}")
        return " and ".join(changes)


NEW_TYPES: Final[tuple[NewType, ...]] = (
    SimpleRestriction(
        message="pacs.008.001.08",
        name="SchemeCurrencyCode",
        base="ActiveCurrencyCode",
        facets=(("pattern", "[A-Z]{3,3}"), ("enumeration", SCHEME_CURRENCY)),
        rule=RULE_CURRENCY,
    ),
    SimpleRestriction(
        message="pacs.008.001.08",
        name="SchemeCurrencyAndAmount_SimpleType",
        base="ActiveCurrencyAndAmount_SimpleType",
        facets=(("fractionDigits", "2"), ("totalDigits", "18"), ("minExclusive", "0")),
        rule=RULE_AMOUNT,
    ),
    SimpleContentType(
        message="pacs.008.001.08",
        name="SchemeCurrencyAndAmount",
        content="SchemeCurrencyAndAmount_SimpleType",
        attributes=(Attribute(name="Ccy", type="SchemeCurrencyCode"),),
        rule=RULE_AMOUNT,
    ),
    SimpleRestriction(
        message="pacs.008.001.08",
        name="SchemeSettlementMethod1Code",
        base="SettlementMethod1Code",
        facets=(("enumeration", "CLRG"),),
        rule=RULE_SETTLEMENT_METHOD,
    ),
    SimpleRestriction(
        message="pacs.008.001.08",
        name="SchemeChargeBearerType1Code",
        base="ChargeBearerType1Code",
        facets=(("enumeration", "SLEV"),),
        rule=RULE_CHARGE_BEARER,
    ),
    SimpleRestriction(
        message=STATEMENT,
        name="SchemeCurrencyCode",
        base="ActiveOrHistoricCurrencyCode",
        facets=(("pattern", "[A-Z]{3,3}"), ("enumeration", SCHEME_CURRENCY)),
        rule=RULE_CURRENCY,
    ),
    SimpleRestriction(
        message=STATEMENT,
        name="SchemeBalanceAmount_SimpleType",
        base="ActiveOrHistoricCurrencyAndAmount_SimpleType",
        facets=(("fractionDigits", "2"), ("totalDigits", "18"), ("minInclusive", "0")),
        rule=RULE_STATEMENT_BALANCE,
    ),
    SimpleContentType(
        message=STATEMENT,
        name="SchemeBalanceAmount",
        content="SchemeBalanceAmount_SimpleType",
        attributes=(Attribute(name="Ccy", type="SchemeCurrencyCode"),),
        rule=RULE_STATEMENT_BALANCE,
    ),
    SimpleRestriction(
        message=STATEMENT,
        name="SchemeBalanceType1Code",
        base="ExternalBalanceType1Code",
        facets=(("enumeration", "OPBD"), ("enumeration", "CLBD")),
        rule=RULE_STATEMENT_BALANCE,
    ),
    SimpleRestriction(
        message=STATEMENT,
        name="SchemeEntryAmount_SimpleType",
        base="ActiveOrHistoricCurrencyAndAmount_SimpleType",
        facets=(("fractionDigits", "2"), ("totalDigits", "18"), ("minExclusive", "0")),
        rule=RULE_STATEMENT_ENTRY,
    ),
    SimpleContentType(
        message=STATEMENT,
        name="SchemeEntryAmount",
        content="SchemeEntryAmount_SimpleType",
        attributes=(Attribute(name="Ccy", type="SchemeCurrencyCode"),),
        rule=RULE_STATEMENT_ENTRY,
    ),
    SimpleRestriction(
        message=STATEMENT,
        name="SchemeEntryStatus1Code",
        base="ExternalEntryStatus1Code",
        facets=(("enumeration", "BOOK"),),
        rule=RULE_STATEMENT_ENTRY,
    ),
)
"""Types the scheme adds to a message schema (each a restriction of a base type)."""

NARROWINGS: Final[tuple[Narrowing, ...]] = (
    Narrowing(
        message="pacs.008.001.08",
        path="Document/FIToFICstmrCdtTrf/GrpHdr/TtlIntrBkSttlmAmt",
        type="SchemeCurrencyAndAmount",
        rule=RULE_AMOUNT,
    ),
    Narrowing(
        message="pacs.008.001.08",
        path="Document/FIToFICstmrCdtTrf/GrpHdr/SttlmInf/SttlmMtd",
        type="SchemeSettlementMethod1Code",
        rule=RULE_SETTLEMENT_METHOD,
    ),
    Narrowing(
        message="pacs.008.001.08",
        path="Document/FIToFICstmrCdtTrf/CdtTrfTxInf/PmtId/UETR",
        min_occurs=1,
        rule=RULE_UETR,
    ),
    Narrowing(
        message="pacs.008.001.08",
        path="Document/FIToFICstmrCdtTrf/CdtTrfTxInf/IntrBkSttlmAmt",
        type="SchemeCurrencyAndAmount",
        rule=RULE_AMOUNT,
    ),
    Narrowing(
        message="pacs.008.001.08",
        path="Document/FIToFICstmrCdtTrf/CdtTrfTxInf/ChrgBr",
        type="SchemeChargeBearerType1Code",
        rule=RULE_CHARGE_BEARER,
    ),
    Narrowing(
        message="acmt.023.001.04",
        path="Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct",
        min_occurs=1,
        rule=RULE_ALIAS,
    ),
    Narrowing(
        message="acmt.023.001.04",
        path="Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct/Prxy",
        min_occurs=1,
        rule=RULE_ALIAS,
    ),
    Narrowing(
        message="acmt.023.001.04",
        path="Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct/Prxy/Tp",
        min_occurs=1,
        rule=RULE_ALIAS,
    ),
    Narrowing(
        message="acmt.024.001.04",
        path="Document/IdVrfctnRpt/OrgnlAssgnmt",
        min_occurs=1,
        rule=RULE_LOOKUP_ANSWER,
    ),
    Narrowing(
        message="acmt.024.001.04",
        path="Document/IdVrfctnRpt/OrgnlAssgnmt/MsgId",
        min_occurs=1,
        rule=RULE_LOOKUP_ANSWER,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/ElctrncSeqNb",
        min_occurs=1,
        rule=RULE_STATEMENT,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/CreDtTm",
        min_occurs=1,
        rule=RULE_STATEMENT,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/FrToDt",
        min_occurs=1,
        rule=RULE_STATEMENT,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Acct/Svcr",
        min_occurs=1,
        rule=RULE_STATEMENT_ACCOUNT,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Acct/Svcr/FinInstnId/BICFI",
        min_occurs=1,
        rule=RULE_STATEMENT_ACCOUNT,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Bal/Tp/CdOrPrtry/Cd",
        type="SchemeBalanceType1Code",
        rule=RULE_STATEMENT_BALANCE,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Bal/Amt",
        type="SchemeBalanceAmount",
        rule=RULE_STATEMENT_BALANCE,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/TxsSummry",
        min_occurs=1,
        rule=RULE_STATEMENT_SUMMARY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/TxsSummry/TtlCdtNtries",
        min_occurs=1,
        rule=RULE_STATEMENT_SUMMARY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/TxsSummry/TtlDbtNtries",
        min_occurs=1,
        rule=RULE_STATEMENT_SUMMARY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/Amt",
        type="SchemeEntryAmount",
        rule=RULE_STATEMENT_ENTRY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/Sts/Cd",
        type="SchemeEntryStatus1Code",
        rule=RULE_STATEMENT_ENTRY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/BookgDt",
        min_occurs=1,
        rule=RULE_STATEMENT_ENTRY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/ValDt",
        min_occurs=1,
        rule=RULE_STATEMENT_ENTRY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/AcctSvcrRef",
        min_occurs=1,
        rule=RULE_STATEMENT_ENTRY,
    ),
    Narrowing(
        message=STATEMENT,
        path="Document/BkToCstmrStmt/Stmt/Ntry/BkTxCd/Prtry",
        min_occurs=1,
        rule=RULE_STATEMENT_ENTRY,
    ),
)
"""Element narrowings, applied in this order."""

VARIANT_PREFIX: Final = "Scheme"
"""Prefix of the copy made of a shared complex type that one path narrows."""

# --------------------------------------------------------------------------------------
# The machinery
# --------------------------------------------------------------------------------------

XS_NS: Final = "http://www.w3.org/2001/XMLSchema"
ISO_NS_PREFIX: Final = "urn:iso:std:iso:20022:tech:xsd:"
XS: Final = f"{{{XS_NS}}}"
TYPE_TAGS: Final = (f"{XS}complexType", f"{XS}simpleType")
GENERATED_BY_EDITOR: Final = "Generated by Standards Editor"
XML_DECLARATION: Final = b'<?xml version="1.0" encoding="UTF-8"?>\n'
REPO: Final = Path(__file__).resolve().parents[1]


class GuidelineError(Exception):
    """The narrowing table does not fit the base schema."""


def _qname(elem: etree._Element, value: str) -> tuple[str | None, str]:
    """Resolve a QName-valued attribute in the scope of `elem`."""
    prefix, _, local = value.rpartition(":")
    return elem.nsmap.get(prefix or None), local


class _Schema:
    """A base schema being narrowed in place, with the bookkeeping narrowings need."""

    def __init__(self, message: str, tree: etree._ElementTree) -> None:
        self.message = message
        self.root = tree.getroot()
        self.tns = ISO_NS_PREFIX + message
        if self.root.tag != f"{XS}schema" or self.root.get("targetNamespace") != self.tns:
            raise GuidelineError(f"{message}: not the base schema of {self.tns}")
        if self.root.nsmap.get(None) != self.tns:
            raise GuidelineError(f"{message}: the default namespace must be {self.tns}")
        self.types: dict[str, etree._Element] = {}
        for child in self.root:
            if child.tag in TYPE_TAGS:
                self.types[str(child.get("name"))] = child
        self.refs: Counter[str] = Counter()
        for elem in self.root.iter(etree.Element):
            self._count(elem, +1)

    def _local_refs(self, elem: etree._Element) -> Iterator[str]:
        """Names of this schema's types that `elem` references by @type or @base."""
        for attr in ("type", "base"):
            value = elem.get(attr)
            if value is None:
                continue
            ns, local = _qname(elem, value)
            if ns == self.tns:
                yield local

    def _count(self, elem: etree._Element, delta: int) -> None:
        for name in self._local_refs(elem):
            self.refs[name] += delta

    def add_type(self, elem: etree._Element) -> None:
        """Insert a new named type, keeping the base's ordering by name."""
        name = str(elem.get("name"))
        if name in self.types or name in self._global_elements():
            raise GuidelineError(f"{self.message}: {name} already exists")
        key = _order(name)
        following = [t for t in self.root if t.tag in TYPE_TAGS and _order(t.get("name")) > key]
        if following:
            following[0].addprevious(elem)
        else:
            self.root.append(elem)
        # References are counted once `elem` is in the tree: a detached copy does not
        # carry the schema's default namespace, so its QNames would not resolve to it.
        for sub in elem.iter(etree.Element):
            for ref in self._local_refs(sub):
                if ref not in self.types:
                    raise GuidelineError(f"{self.message}: {name} refers to unknown {ref}")
            self._count(sub, +1)
        self.types[name] = elem

    def _global_elements(self) -> dict[str, etree._Element]:
        return {str(e.get("name")): e for e in self.root.iterchildren(f"{XS}element")}

    def retype(self, decl: etree._Element, new_type: str) -> None:
        """Point the element declaration `decl` to the type `new_type`."""
        if new_type not in self.types:
            raise GuidelineError(f"{self.message}: unknown type {new_type}")
        self._count(decl, -1)
        decl.set("type", new_type)
        self._count(decl, +1)

    def resolve(self, path: str) -> etree._Element:
        """The element declaration at `path`, every complex type on the way made unique.

        Walking down from the root, a complex type referenced more than once is copied
        under `VARIANT_PREFIX + name` and the path is re-pointed to the copy, so that
        editing the declaration cannot affect any other path.
        """
        steps = path.split("/")
        decl = self._global_elements().get(steps[0])
        if decl is None:
            raise GuidelineError(f"{self.message}: no root element {steps[0]}")
        for depth, step in enumerate(steps[1:], start=1):
            ctype = self._complex_type_of(decl, "/".join(steps[:depth]))
            if self.refs[str(ctype.get("name"))] > 1:
                ctype = self._variant(ctype, "/".join(steps[:depth]))
                self.retype(decl, str(ctype.get("name")))
            found = [
                e
                for e in ctype.iter(f"{XS}element")
                if e.get("name") == step and _owner(e) is ctype
            ]
            if len(found) != 1:
                raise GuidelineError(f"{self.message}: no element {'/'.join(steps[: depth + 1])}")
            decl = found[0]
        return decl

    def _complex_type_of(self, decl: etree._Element, where: str) -> etree._Element:
        value = decl.get("type")
        if value is None:
            raise GuidelineError(f"{self.message}: {where} has no named type")
        ns, local = _qname(decl, value)
        ctype = self.types.get(local) if ns == self.tns else None
        if ctype is None or ctype.tag != f"{XS}complexType":
            raise GuidelineError(f"{self.message}: {where} is not of a complex type")
        return ctype

    def _variant(self, ctype: etree._Element, where: str) -> etree._Element:
        name = str(ctype.get("name"))
        clone = copy.deepcopy(ctype)
        clone.set("name", VARIANT_PREFIX + name)
        annotate(
            clone,
            f"Scheme variant of {name} for {where}, narrowed below; {name} itself is "
            "kept unchanged for its other uses.",
        )
        self.add_type(clone)
        return clone

    def apply(self, narrowing: Narrowing) -> None:
        """Apply one element narrowing."""
        decl = self.resolve(narrowing.path)
        if narrowing.type is not None:
            was = decl.get("type")
            self.retype(decl, narrowing.type)
            annotate(decl, f"{narrowing.rule} Base type: {was}.")
        if narrowing.min_occurs is not None:
            was_min = int(decl.get("minOccurs", "1"))
            if narrowing.min_occurs < was_min:
                raise GuidelineError(f"{self.message}: {narrowing.path} minOccurs would widen")
            max_occurs = decl.get("maxOccurs", "1")
            if max_occurs != "unbounded" and int(max_occurs) < narrowing.min_occurs:
                raise GuidelineError(f"{self.message}: {narrowing.path} minOccurs > maxOccurs")
            decl.set("minOccurs", str(narrowing.min_occurs))
            annotate(decl, f"{narrowing.rule} Base minOccurs: {was_min}.")


def _order(name: str | None) -> tuple[str, bool]:
    """Sort key of type names, as in the base schemas: by name, `X_SimpleType` before `X`."""
    name = name or ""
    stem = name.removesuffix("_SimpleType")
    return stem, stem == name


def _owner(decl: etree._Element) -> etree._Element | None:
    """The nearest enclosing type definition of a local element declaration."""
    for ancestor in decl.iterancestors():
        if ancestor.tag in TYPE_TAGS or ancestor.tag == f"{XS}element":
            return ancestor
    return None


def annotate(component: etree._Element, text: str) -> None:
    """Add an `xs:documentation` to the component's (first-child) `xs:annotation`."""
    first = component[0] if len(component) else None
    if first is not None and first.tag == f"{XS}annotation":
        annotation = first
    else:
        annotation = etree.Element(f"{XS}annotation")
        component.insert(0, annotation)
    etree.SubElement(annotation, f"{XS}documentation").text = text


def _new_type_element(new: NewType) -> etree._Element:
    if isinstance(new, SimpleRestriction):
        elem = etree.Element(f"{XS}simpleType", name=new.name)
        annotate(elem, new.rule)
        restriction = etree.SubElement(elem, f"{XS}restriction", base=new.base)
        for facet, value in new.facets:
            etree.SubElement(restriction, f"{XS}{facet}", value=value)
        return elem
    elem = etree.Element(f"{XS}complexType", name=new.name)
    annotate(elem, new.rule)
    content = etree.SubElement(elem, f"{XS}simpleContent")
    extension = etree.SubElement(content, f"{XS}extension", base=new.content)
    for attribute in new.attributes:
        attr = etree.SubElement(extension, f"{XS}attribute", name=attribute.name)
        attr.set("type", attribute.type)
        attr.set("use", "required" if attribute.required else "optional")
    return elem


def _header(message: str, new_types: Sequence[NewType], narrowings: Sequence[Narrowing]) -> str:
    """The header comment of the scheme schema of `message`."""
    wrap = textwrap.TextWrapper(width=88, initial_indent="  - ", subsequent_indent="    ")
    intro = (
        f"Scheme usage guideline of {message}: a restriction of the ISO 20022 message "
        f"definition {ISO_NS_PREFIX}{message}. Every message valid against this schema "
        "is also valid against the ISO 20022 base schema of the same message version."
    )
    origin = (
        "Generated by tools/usage_guideline.py from the ISO 20022 base schema. Do not "
        "edit: change the narrowing table in the tool and regenerate."
    )
    lines = [*textwrap.wrap(intro, 88), "", *textwrap.wrap(origin, 88), ""]
    if not narrowings:
        lines.append("Narrowings applied: none (the base message definition, unchanged).")
    else:
        lines.append("Narrowings applied:")
        for n in narrowings:
            lines.extend(wrap.wrap(f"{n.path}: {n.summary()}. {n.rule}"))
    if new_types:
        lines.extend(["", "Types added by the scheme (each a restriction of a base type):"])
        for t in new_types:
            lines.extend(wrap.wrap(t.summary()))
    text = "\n".join(f"  {line}".rstrip() for line in lines)
    if "--" in text:
        raise GuidelineError(f"{message}: the header would not be a valid XML comment")
    return f"\n{text}\n"


def build(
    message: str,
    base_xsd: bytes,
    *,
    new_types: Sequence[NewType] = NEW_TYPES,
    narrowings: Sequence[Narrowing] = NARROWINGS,
) -> bytes:
    """The scheme schema of `message` from the bytes of its ISO 20022 base schema."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    schema = _Schema(message, _without_editor_comment(etree.fromstring(base_xsd, parser)))
    new_types = [t for t in new_types if t.message == message]
    narrowings = [n for n in narrowings if n.message == message]
    for new in new_types:
        schema.add_type(_new_type_element(new))
    for narrowing in narrowings:
        schema.apply(narrowing)
    schema.root.addprevious(etree.Comment(_header(message, new_types, narrowings)))
    tree = schema.root.getroottree()
    etree.indent(tree, space="    ")
    out = XML_DECLARATION + etree.tostring(tree, encoding="UTF-8", pretty_print=True)
    etree.XMLSchema(etree.fromstring(out))  # the result must be a valid schema
    return out


def _without_editor_comment(root: etree._Element) -> etree._ElementTree:
    """The document of `root`, less the base's "Generated by Standards Editor" comment."""
    kept = [
        node
        for node in root.itersiblings(preceding=True)
        if not (isinstance(node, etree._Comment) and GENERATED_BY_EDITOR in str(node.text))
    ]
    copied = copy.deepcopy(root)  # a copy of the root element leaves its siblings behind
    for inner in list(copied.iter(etree.Comment)):
        if GENERATED_BY_EDITOR in str(inner.text):
            parent = inner.getparent()
            if parent is not None:
                parent.remove(inner)
    for node in kept:  # nearest first
        copied.addprevious(copy.deepcopy(node))
    return etree.ElementTree(copied)


def generate(base_dir: Path, out_dir: Path) -> list[Path]:
    """Write the scheme schema of every message in `MESSAGES`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for message in MESSAGES:
        target = out_dir / f"{message}.xsd"
        target.write_bytes(build(message, (base_dir / f"{message}.xsd").read_bytes()))
        written.append(target)
    return written


def stale(base_dir: Path, out_dir: Path) -> list[Path]:
    """The scheme schemas in `out_dir` that differ from what the tool would write."""
    found = []
    for message in MESSAGES:
        target = out_dir / f"{message}.xsd"
        wanted = build(message, (base_dir / f"{message}.xsd").read_bytes())
        if not target.is_file() or target.read_bytes() != wanted:
            found.append(target)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--base",
        type=Path,
        default=REPO.parent / "shared" / "iso20022-base",
        help="directory of the ISO 20022 base schemas",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "schemas" / "iso20022",
        help="directory to write the scheme schemas to",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if a committed scheme schema is out of date",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            out_of_date = stale(args.base, args.out)
            for path in out_of_date:
                print(f"out of date: {path}", file=sys.stderr)
            return 1 if out_of_date else 0
        for path in generate(args.base, args.out):
            print(path)
    except GuidelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
