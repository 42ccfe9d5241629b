"""The scheme schemas are restrictions of the ISO 20022 base schemas, and up to date.

Theory: the scheme may only narrow the ISO message definitions (RULEBOOK §2), never
widen them, so a message a participant builds to the scheme schema is a valid ISO 20022
message for any other system. `tools.restriction` checks that statically, on the
xmlschema component model of both schemas; the negative cases below prove that the
check does fail on each kind of widening. The committed schemas are also checked to be
exactly what `tools/usage_guideline.py` produces from the base schemas, so the
declarative narrowing table and the files the switch loads cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from lxml import etree

from tools import usage_guideline
from tools.restriction import restriction_violations

REPO = Path(__file__).resolve().parents[2]
BASE_DIR = REPO / ".." / "shared" / "iso20022-base"
SCHEME_DIR = REPO / "schemas" / "iso20022"
XS = "{http://www.w3.org/2001/XMLSchema}"


@cache
def _load(path: Path) -> Any:
    return xmlschema.XMLSchema10(str(path))


def scheme(message: str) -> Any:
    return _load(SCHEME_DIR / f"{message}.xsd")


def base(message: str) -> Any:
    return _load(BASE_DIR / f"{message}.xsd")


def named(root: etree._Element, name: str) -> etree._Element:
    """The top-level type definition called `name`."""
    types = (f"{XS}complexType", f"{XS}simpleType")
    (found,) = (c for c in root if c.tag in types and c.get("name") == name)
    return found


def text_of(elem: etree._Element) -> str:
    return "".join(str(t) for t in elem.itertext())


def field_types(root: etree._Element, type_name: str) -> dict[str | None, str | None]:
    """Element name -> type name, for the local elements of the complex type `type_name`."""
    return {e.get("name"): e.get("type") for e in named(root, type_name).iter(f"{XS}element")}


# --- the committed scheme schemas ------------------------------------------------------


@pytest.mark.parametrize("message", usage_guideline.MESSAGES)
def test_scheme_schema_is_a_restriction_of_the_base(message: str) -> None:
    assert restriction_violations(scheme(message), base(message)) == []


@pytest.mark.parametrize("message", usage_guideline.MESSAGES)
def test_every_difference_from_the_base_is_a_declared_narrowing(message: str) -> None:
    # Read backwards (is the base a restriction of the scheme?), the check lists where
    # the scheme is narrower: those places must all be narrowings of the table.
    declared = {f"/{n.path}" for n in usage_guideline.NARROWINGS if n.message == message}
    found = {
        v.split(": ", 1)[0].removesuffix("/@Ccy")
        for v in restriction_violations(base(message), scheme(message))
    }
    assert found <= declared
    assert bool(found) == bool(declared)


def test_pacs008_narrowings_are_in_force() -> None:
    pacs008 = scheme("pacs.008.001.08")
    tx = pacs008.elements["Document"].type.content[0].type.content
    by_name = {e.local_name: e for e in tx}
    group_header = by_name["GrpHdr"].type.content
    transaction = by_name["CdtTrfTxInf"].type.content
    amounts = [
        e.type
        for e in (*group_header, *transaction)
        if e.local_name in ("TtlIntrBkSttlmAmt", "IntrBkSttlmAmt")
    ]
    assert [t.local_name for t in amounts] == ["SchemeCurrencyAndAmount"] * 2
    assert amounts[0].attributes["Ccy"].type.enumeration == ["USD"]
    instructed = next(e for e in transaction if e.local_name == "InstdAmt")
    assert instructed.type.local_name == "ActiveOrHistoricCurrencyAndAmount"
    uetr = next(e for e in transaction if e.local_name == "PmtId").type.content
    assert next(e for e in uetr if e.local_name == "UETR").min_occurs == 1


# --- the generator ---------------------------------------------------------------------


def test_tool_reproduces_the_committed_schemas(tmp_path: Path) -> None:
    status = usage_guideline.main(["--base", str(BASE_DIR), "--out", str(tmp_path)])
    assert status == 0
    expected = sorted(f"{m}.xsd" for m in usage_guideline.MESSAGES)
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    assert sorted(p.name for p in SCHEME_DIR.glob("*.xsd")) == expected
    for name in expected:
        assert (tmp_path / name).read_bytes() == (SCHEME_DIR / name).read_bytes(), name


def test_tool_check_mode_accepts_the_committed_schemas() -> None:
    assert usage_guideline.main(["--base", str(BASE_DIR), "--out", str(SCHEME_DIR), "--check"]) == 0


def test_tool_check_mode_reports_a_stale_schema(tmp_path: Path) -> None:
    for source in SCHEME_DIR.glob("*.xsd"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "pacs.008.001.08.xsd").write_bytes(b"<stale/>")
    assert usage_guideline.main(["--base", str(BASE_DIR), "--out", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("message", usage_guideline.MESSAGES)
def test_generated_schema_header_and_annotations(message: str) -> None:
    text = (SCHEME_DIR / f"{message}.xsd").read_text(encoding="utf-8")
    assert "Standards Editor" not in text
    tree = etree.parse(str(SCHEME_DIR / f"{message}.xsd"))
    header = tree.getroot().getprevious()
    assert isinstance(header, etree._Comment)
    assert f"Scheme usage guideline of {message}" in str(header.text)
    assert "restriction of the ISO 20022 message" in str(header.text)
    for narrowing in usage_guideline.NARROWINGS:
        if narrowing.message == message:
            assert narrowing.path in str(header.text)
    for new in usage_guideline.NEW_TYPES:
        if new.message == message:
            assert new.rule.startswith("RULEBOOK §")
            assert new.rule in text_of(named(tree.getroot(), new.name))
    annotated = [
        decl
        for decl in tree.getroot().iter(f"{XS}element")
        if decl.find(f"{XS}annotation") is not None
    ]
    rules: dict[str, set[str]] = {}
    for n in usage_guideline.NARROWINGS:
        if n.message == message:
            assert n.rule.startswith("RULEBOOK §")
            rules.setdefault(n.path.rsplit("/", 1)[1], set()).add(n.rule)
    paths = {n.path for n in usage_guideline.NARROWINGS if n.message == message}
    assert sorted(str(d.get("name")) for d in annotated) == sorted(
        p.rsplit("/", 1)[1] for p in paths
    )
    for decl in annotated:
        assert any(rule in text_of(decl) for rule in rules[str(decl.get("name"))])


SHARED_BASE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by Standards Editor (build:R0) on 2020 Jan 01 00:00:00-->
<xs:schema xmlns="urn:iso:std:iso:20022:tech:xsd:test.001.001.01"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified"
    targetNamespace="urn:iso:std:iso:20022:tech:xsd:test.001.001.01">
  <xs:element name="Document" type="Document"/>
  <xs:simpleType name="Code">
    <xs:restriction base="xs:string">
      <xs:enumeration value="A"/>
      <xs:enumeration value="B"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="Document">
    <xs:sequence>
      <xs:element name="Pay" type="Party"/>
      <xs:element name="Rcv" type="Party"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Party">
    <xs:sequence>
      <xs:element maxOccurs="1" minOccurs="0" name="Nm" type="Text"/>
      <xs:element name="Code" type="Code"/>
    </xs:sequence>
  </xs:complexType>
  <xs:simpleType name="Text">
    <xs:restriction base="xs:string">
      <xs:maxLength value="35"/>
    </xs:restriction>
  </xs:simpleType>
</xs:schema>
"""


def test_tool_copies_a_shared_type_before_narrowing_one_path(tmp_path: Path) -> None:
    message = "test.001.001.01"
    new_types = (
        usage_guideline.SimpleRestriction(
            message=message,
            name="SchemeCode",
            base="Code",
            facets=(("enumeration", "A"),),
            rule="R1",
        ),
    )
    narrowings = (
        usage_guideline.Narrowing(
            message=message, path="Document/Rcv/Code", type="SchemeCode", rule="R1"
        ),
        usage_guideline.Narrowing(message=message, path="Document/Rcv/Nm", min_occurs=1, rule="R2"),
    )
    out = usage_guideline.build(message, SHARED_BASE, new_types=new_types, narrowings=narrowings)
    assert out == usage_guideline.build(
        message, SHARED_BASE, new_types=new_types, narrowings=narrowings
    )
    assert b"Standards Editor" not in out
    root = etree.fromstring(out)
    names = [t.get("name") for t in root if t.tag in (f"{XS}complexType", f"{XS}simpleType")]
    assert names == ["Code", "Document", "Party", "SchemeCode", "SchemeParty", "Text"]
    assert field_types(root, "Document") == {"Pay": "Party", "Rcv": "SchemeParty"}
    assert field_types(root, "Party") == {"Nm": "Text", "Code": "Code"}
    assert field_types(root, "SchemeParty") == {"Nm": "Text", "Code": "SchemeCode"}
    assert "R1" in text_of(named(root, "SchemeCode"))
    assert "Scheme variant of Party for Document/Rcv" in text_of(named(root, "SchemeParty"))
    (scheme_path, base_path) = (tmp_path / "scheme.xsd", tmp_path / "base.xsd")
    scheme_path.write_bytes(out)
    base_path.write_bytes(SHARED_BASE)
    assert restriction_violations(_load(scheme_path), _load(base_path)) == []
    backwards = restriction_violations(_load(base_path), _load(scheme_path))
    assert {v.split(": ", 1)[0] for v in backwards} == {"/Document/Rcv/Nm", "/Document/Rcv/Code"}


def test_tool_refuses_a_path_the_base_lacks() -> None:
    message = "test.001.001.01"
    narrowings = (
        usage_guideline.Narrowing(
            message=message, path="Document/Pay/Nope", min_occurs=1, rule="R"
        ),
    )
    with pytest.raises(usage_guideline.GuidelineError, match="no element Document/Pay/Nope"):
        usage_guideline.build(message, SHARED_BASE, new_types=(), narrowings=narrowings)


# --- the check itself, on tiny schemas -------------------------------------------------

TINY_BASE = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns="urn:t" xmlns:xs="http://www.w3.org/2001/XMLSchema"
    elementFormDefault="qualified" targetNamespace="urn:t">
  <xs:element name="Document" type="Document"/>
  <xs:complexType name="Document">
    <xs:sequence>
      <xs:element minOccurs="1" name="Req" type="Text"/>
      <xs:element maxOccurs="3" minOccurs="0" name="Rep" type="Text"/>
      <xs:element minOccurs="0" name="Code" type="Code"/>
      <xs:element minOccurs="0" name="Id" type="Id"/>
      <xs:element minOccurs="0" name="Amt" type="Amount"/>
      <xs:element minOccurs="0" name="Node" type="Node"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Node">
    <xs:choice>
      <xs:element name="Leaf" type="Text"/>
      <xs:element name="Node" type="Node"/>
    </xs:choice>
  </xs:complexType>
  <xs:simpleType name="Text">
    <xs:restriction base="xs:string">
      <xs:minLength value="1"/>
      <xs:maxLength value="35"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="Code">
    <xs:restriction base="xs:string">
      <xs:enumeration value="CLRG"/>
      <xs:enumeration value="INDA"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="Id">
    <xs:restriction base="xs:string">
      <xs:pattern value="[A-Z]{3,3}"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="Amount_SimpleType">
    <xs:restriction base="xs:decimal">
      <xs:fractionDigits value="2"/>
      <xs:totalDigits value="18"/>
      <xs:minInclusive value="0"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="Amount">
    <xs:simpleContent>
      <xs:extension base="Amount_SimpleType">
        <xs:attribute name="Ccy" type="Id" use="required"/>
      </xs:extension>
    </xs:simpleContent>
  </xs:complexType>
</xs:schema>
"""


def _tiny(text: str) -> Any:
    return xmlschema.XMLSchema10(text)


def _widened(old: str, new: str) -> Any:
    assert old in TINY_BASE, old
    return _tiny(TINY_BASE.replace(old, new, 1))


def test_a_schema_is_a_restriction_of_itself() -> None:
    assert restriction_violations(_tiny(TINY_BASE), _tiny(TINY_BASE)) == []


def test_a_true_narrowing_passes() -> None:
    narrowed = (
        TINY_BASE.replace('<xs:enumeration value="INDA"/>', "")
        .replace('maxOccurs="3" minOccurs="0"', 'maxOccurs="2" minOccurs="1"')
        .replace('<xs:fractionDigits value="2"/>', '<xs:fractionDigits value="0"/>')
        .replace('<xs:minInclusive value="0"/>', '<xs:minExclusive value="0"/>')
        .replace('<xs:maxLength value="35"/>', '<xs:maxLength value="10"/>')
        .replace('<xs:element name="Leaf" type="Text"/>', "")
    )
    assert restriction_violations(_tiny(narrowed), _tiny(TINY_BASE)) == []


WIDENINGS = {
    "minOccurs lowered": (
        '<xs:element minOccurs="1" name="Req"',
        '<xs:element minOccurs="0" name="Req"',
        "/Document/Req: minOccurs 0 < base 1",
    ),
    "maxOccurs raised": (
        'maxOccurs="3" minOccurs="0" name="Rep"',
        'maxOccurs="unbounded" minOccurs="0" name="Rep"',
        "/Document/Rep: maxOccurs unbounded > base 3",
    ),
    "extra enumeration value": (
        '<xs:enumeration value="INDA"/>',
        '<xs:enumeration value="INDA"/><xs:enumeration value="COVE"/>',
        "/Document/Code: enumeration value 'COVE' not in the base",
    ),
    "pattern removed": (
        '<xs:pattern value="[A-Z]{3,3}"/>',
        "",
        "/Document/Id: base pattern [A-Z]{3,3} missing",
    ),
    "pattern replaced": (
        '<xs:pattern value="[A-Z]{3,3}"/>',
        '<xs:pattern value="[A-Z]{3,4}"/>',
        "/Document/Id: base pattern [A-Z]{3,3} missing",
    ),
    "maxLength widened": (
        '<xs:maxLength value="35"/>',
        '<xs:maxLength value="70"/>',
        "/Document/Req: maxLength 70 wider than base 35",
    ),
    "minLength dropped": (
        '<xs:minLength value="1"/>',
        "",
        "/Document/Req: minLength 0 < base 1",
    ),
    "fractionDigits widened": (
        '<xs:fractionDigits value="2"/>',
        '<xs:fractionDigits value="5"/>',
        "/Document/Amt: fractionDigits 5 wider than base 2",
    ),
    "lower bound widened": (
        '<xs:minInclusive value="0"/>',
        '<xs:minInclusive value="-1"/>',
        "/Document/Amt: lower bound inclusive -1 wider than inclusive 0",
    ),
    "extra element": (
        '<xs:element minOccurs="0" name="Node" type="Node"/>',
        '<xs:element minOccurs="0" name="Node" type="Node"/>'
        '<xs:element minOccurs="0" name="Extra" type="Text"/>',
        "/Document/Extra: not in the base",
    ),
    "extra element deep in a recursive type": (
        '<xs:element name="Node" type="Node"/>\n    </xs:choice>',
        '<xs:element name="Node" type="Node"/><xs:element name="Twig" type="Text"/></xs:choice>',
        "/Document/Node/Twig: not in the base",
    ),
    "required element dropped": (
        '<xs:element minOccurs="1" name="Req" type="Text"/>',
        "",
        "/Document/Req: required, dropped",
    ),
    "sequence reordered": (
        '<xs:element minOccurs="0" name="Code" type="Code"/>\n'
        '      <xs:element minOccurs="0" name="Id" type="Id"/>',
        '<xs:element minOccurs="0" name="Id" type="Id"/>'
        '<xs:element minOccurs="0" name="Code" type="Code"/>',
        "/Document/Code: out of the base's sequence order",
    ),
    "choice made a sequence": (
        '<xs:choice>\n      <xs:element name="Leaf" type="Text"/>\n'
        '      <xs:element name="Node" type="Node"/>\n    </xs:choice>',
        '<xs:sequence><xs:element name="Leaf" type="Text"/>'
        '<xs:element minOccurs="0" name="Node" type="Node"/></xs:sequence>',
        "/Document/Node: model group sequence, the base has choice",
    ),
    "required attribute made optional": (
        'name="Ccy" type="Id" use="required"',
        'name="Ccy" type="Id" use="optional"',
        "/Document/Amt/@Ccy: required in the base, not here",
    ),
    "extra attribute": (
        '<xs:attribute name="Ccy" type="Id" use="required"/>',
        '<xs:attribute name="Ccy" type="Id" use="required"/>'
        '<xs:attribute name="Rate" type="Text"/>',
        "/Document/Amt/@Rate: attribute not in the base",
    ),
    "other primitive type": (
        '<xs:restriction base="xs:string">\n      <xs:pattern',
        '<xs:restriction base="xs:anyURI">\n      <xs:pattern',
        "/Document/Id: primitive type",
    ),
}


@pytest.mark.parametrize("case", WIDENINGS, ids=list(WIDENINGS))
def test_each_widening_is_reported(case: str) -> None:
    old, new, expected = WIDENINGS[case]
    violations = restriction_violations(_widened(old, new), _tiny(TINY_BASE))
    assert len(violations) == 1, violations
    assert violations[0].startswith(expected), violations
