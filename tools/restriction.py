"""Static check that one XML schema is a restriction of another.

Theory of operation. The scheme's schemas are meant to accept a subset of what the ISO
20022 base schemas accept. Instead of sampling documents, this module compares the two
schemas' component models (as built by the xmlschema package) structurally, walking
down from every global element of the scheme schema:

* an element declared in the scheme must be declared at the same path in the base, with
  `minOccurs` no lower and `maxOccurs` no higher (None is unbounded), and not nillable
  or unfixed where the base is not;
* a model group must be of the same kind (sequence, choice, all), with children that
  are a subset of the base's (in the same order for a sequence); a child the scheme
  drops must be optional in a sequence;
* a simple type (an element's, a simple content's, an attribute's) must share the
  base's primitive and built-in type, and every facet must be at least as tight:
  enumeration values a subset of the base's (and each valid against the base type),
  every base pattern present in the scheme, length, minLength, maxLength, totalDigits
  and fractionDigits no wider, and the inclusive/exclusive bounds no wider (compared
  as Decimal). Facets are collected along the whole derivation chain of each type;
* attributes: none that the base lacks, and a required base attribute stays required.

The check is conservative: it can refuse a true restriction written in an unusual way
(a pattern replaced by an equivalent one, say), but it never passes a widening.
Recursive types are walked once per (scheme type, base type) pair, whatever the path.

Usage: python tools/restriction.py SCHEME BASE, each an .xsd file or a directory (files
are then paired by name); exits 1 and lists the violations if there are any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import xmlschema

XSD: Final = "{http://www.w3.org/2001/XMLSchema}"
STRICTNESS: Final = {"skip": 0, "lax": 1, "strict": 2}
"""Wildcard processContents, from the most to the least permissive."""

Bound = tuple[Any, bool]
"""A lower or upper bound: (value, exclusive)."""


def load(path: Path) -> Any:
    """The xmlschema component model of the XSD at `path`."""
    return xmlschema.XMLSchema10(str(path))


def restriction_violations(scheme: Any, base: Any) -> list[str]:
    """Every way in which `scheme` may accept what `base` refuses; empty for a restriction."""
    checker = _Checker()
    if scheme.target_namespace != base.target_namespace:
        checker.report(
            "/", f"target namespace {scheme.target_namespace} is not {base.target_namespace}"
        )
    for name, decl in sorted(scheme.elements.items()):
        path = f"/{decl.local_name}"
        base_decl = base.elements.get(name)
        if base_decl is None:
            checker.report(path, "global element not declared in the base")
        else:
            checker.element(path, decl, base_decl)
    return checker.violations


@dataclass
class _Facets:
    """The facets in force on a simple type, gathered along its derivation chain."""

    builtins: list[str] = field(default_factory=list)
    enumeration: list[Any] | None = None
    patterns: list[frozenset[str]] = field(default_factory=list)
    min_length: int | None = None
    max_length: int | None = None
    total_digits: int | None = None
    fraction_digits: int | None = None
    lower: Bound | None = None
    upper: Bound | None = None


def _facets(simple: Any) -> _Facets:
    found = _Facets()
    step = simple
    while step is not None:
        if _is_builtin(step):
            found.builtins.append(str(step.name))
        for tag, facet in step.facets.items():
            _merge(found, tag, facet)
        step = step.base_type
    return found


def _is_builtin(simple: Any) -> bool:
    return str(simple.name or "").startswith(XSD)


def _merge(found: _Facets, tag: Any, facet: Any) -> None:
    """Fold one derivation step's facet into `found`, the tightest value winning."""
    if tag == f"{XSD}enumeration":
        if found.enumeration is None:  # the most derived enumeration is the effective one
            found.enumeration = list(facet.enumeration)
    elif tag == f"{XSD}pattern":
        found.patterns.append(frozenset(facet.regexps))
    elif tag == f"{XSD}length":  # the same as minLength and maxLength of that value
        found.min_length = _most(found.min_length, facet.value)
        found.max_length = _least(found.max_length, facet.value)
    elif tag == f"{XSD}minLength":
        found.min_length = _most(found.min_length, facet.value)
    elif tag == f"{XSD}maxLength":
        found.max_length = _least(found.max_length, facet.value)
    elif tag == f"{XSD}totalDigits":
        found.total_digits = _least(found.total_digits, facet.value)
    elif tag == f"{XSD}fractionDigits":
        found.fraction_digits = _least(found.fraction_digits, facet.value)
    elif tag in (f"{XSD}minInclusive", f"{XSD}minExclusive"):
        bound = (facet.value, tag == f"{XSD}minExclusive")
        if found.lower is None or _lower_within(bound, found.lower):
            found.lower = bound
    elif tag in (f"{XSD}maxInclusive", f"{XSD}maxExclusive"):
        bound = (facet.value, tag == f"{XSD}maxExclusive")
        if found.upper is None or _upper_within(bound, found.upper):
            found.upper = bound


def _least(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _most(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 comparing two facet values as Decimal; None if they are not numbers."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return 0 if a == b else None
    return (x > y) - (x < y)


def _lower_within(scheme: Bound, base: Bound) -> bool:
    """Whether the lower bound `scheme` is at least as tight as `base`."""
    order = _compare(scheme[0], base[0])
    if order is None:
        return False
    return order > 0 or (order == 0 and (scheme[1] or not base[1]))


def _upper_within(scheme: Bound, base: Bound) -> bool:
    """Whether the upper bound `scheme` is at least as tight as `base`."""
    order = _compare(scheme[0], base[0])
    if order is None:
        return False
    return order < 0 or (order == 0 and (scheme[1] or not base[1]))


def _occurs(value: int | None) -> str:
    return "unbounded" if value is None else str(value)


def _kind(particle: Any) -> str:
    if isinstance(particle, xmlschema.validators.XsdElement):
        return "element"
    if isinstance(particle, xmlschema.validators.XsdAnyElement):
        return "any"
    return "group"


def _children(group: Any) -> dict[tuple[str, str], Any]:
    """A model group's children keyed for matching: elements by name, others by rank."""
    children: dict[tuple[str, str], Any] = {}
    ranks: dict[str, int] = {}
    for particle in group:
        kind = _kind(particle)
        ranks[kind] = ranks.get(kind, 0) + 1
        name = str(particle.name) if kind == "element" else str(ranks[kind])
        children[kind, name] = particle
    return children


def _label(key: tuple[str, str], particle: Any) -> str:
    if key[0] == "element":
        return str(particle.local_name)
    return f"({key[0]} {key[1]})"


class _Checker:
    """Walks a scheme schema against its base, collecting violations."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def report(self, path: str, problem: str) -> None:
        self.violations.append(f"{path}: {problem}")

    def occurs(self, path: str, scheme: Any, base: Any) -> None:
        if scheme.min_occurs < base.min_occurs:
            self.report(path, f"minOccurs {scheme.min_occurs} < base {base.min_occurs}")
        if base.max_occurs is not None and (
            scheme.max_occurs is None or scheme.max_occurs > base.max_occurs
        ):
            self.report(
                path,
                f"maxOccurs {_occurs(scheme.max_occurs)} > base {_occurs(base.max_occurs)}",
            )

    def element(self, path: str, scheme: Any, base: Any) -> None:
        if scheme.nillable and not base.nillable:
            self.report(path, "nillable, the base is not")
        if base.fixed is not None and scheme.fixed != base.fixed:
            self.report(path, f"fixed value {scheme.fixed!r} is not the base's {base.fixed!r}")
        self.type(path, scheme.type, base.type)

    def type(self, path: str, scheme: Any, base: Any) -> None:
        if scheme.is_simple() or base.is_simple():
            if not (scheme.is_simple() and base.is_simple()):
                self.report(path, "simple type against a complex base type (or the reverse)")
            else:
                self.simple(path, scheme, base)
            return
        pair = (id(scheme), id(base))
        if pair in self._seen:
            return
        self._seen.add(pair)
        self.attributes(path, scheme.attributes, base.attributes)
        if scheme.has_simple_content() and base.has_simple_content():
            self.simple(path, scheme.content, base.content)
        elif scheme.has_simple_content() or base.has_simple_content():
            self.report(path, "simple content against complex content (or the reverse)")
        else:
            if scheme.mixed and not base.mixed:
                self.report(path, "mixed content, the base is not")
            self.group(path, scheme.content, base.content)

    def group(self, path: str, scheme: Any, base: Any) -> None:
        self.occurs(f"{path}/({scheme.model})", scheme, base)
        if scheme.model != base.model:
            self.report(path, f"model group {scheme.model}, the base has {base.model}")
            return
        ours, theirs = _children(scheme), _children(base)
        base_rank = {key: rank for rank, key in enumerate(theirs)}
        last = -1
        for key, particle in ours.items():
            where = f"{path}/{_label(key, particle)}"
            if key not in theirs:
                self.report(where, "not in the base")
                continue
            rank = base_rank[key]
            if scheme.model == "sequence" and rank < last:
                self.report(where, "out of the base's sequence order")
            last = max(last, rank)
            counterpart = theirs[key]
            self.occurs(where, particle, counterpart)
            if key[0] == "element":
                self.element(where, particle, counterpart)
            elif key[0] == "any":
                self.wildcard(where, particle, counterpart)
            else:
                self.group(where, particle, counterpart)
        dropped = [key for key in theirs if key not in ours]
        if scheme.model in ("sequence", "all"):
            for key in dropped:
                if theirs[key].min_occurs > 0:
                    self.report(f"{path}/{_label(key, theirs[key])}", "required, dropped")
        elif scheme.model == "choice" and not ours and theirs:
            self.report(path, "a choice with no alternative left")

    def wildcard(self, path: str, scheme: Any, base: Any) -> None:
        if STRICTNESS[scheme.process_contents] < STRICTNESS[base.process_contents]:
            self.report(
                path,
                f"processContents {scheme.process_contents} is laxer than {base.process_contents}",
            )
        base_any = "##any" in base.namespace and not base.not_namespace
        if not base_any and (
            "##any" in scheme.namespace
            or not set(scheme.namespace) <= set(base.namespace)
            or not set(base.not_namespace) <= set(scheme.not_namespace)
        ):
            self.report(path, "wildcard admits namespaces the base does not")

    def attributes(self, path: str, scheme: Any, base: Any) -> None:
        for name, attribute in scheme.items():
            if name is None:
                if None not in base:
                    self.report(f"{path}/@*", "attribute wildcard, the base has none")
                else:
                    self.wildcard(f"{path}/@*", attribute, base[None])
                continue
            where = f"{path}/@{attribute.local_name}"
            if attribute.use == "prohibited":
                continue
            counterpart = base.get(name)
            if counterpart is None:
                self.report(where, "attribute not in the base")
                continue
            if attribute.fixed is None and counterpart.fixed is not None:
                self.report(where, "not fixed, the base's is")
            self.type(where, attribute.type, counterpart.type)
        for name, counterpart in base.items():
            if name is None or counterpart.use != "required":
                continue
            attribute = scheme.get(name)
            if attribute is None or attribute.use != "required":
                self.report(f"{path}/@{counterpart.local_name}", "required in the base, not here")

    def simple(self, path: str, scheme: Any, base: Any) -> None:
        pair = (id(scheme), id(base))
        if pair in self._seen:
            return
        self._seen.add(pair)
        if not (scheme.is_atomic() and base.is_atomic()):
            if scheme.is_atomic() or base.is_atomic() or scheme.name != base.name:
                self.report(path, "list or union type that is not the base's own")
            return
        if scheme.primitive_type.name != base.primitive_type.name:
            self.report(
                path,
                f"primitive type {scheme.primitive_type.name} is not the base's "
                f"{base.primitive_type.name}",
            )
            return
        ours, theirs = _facets(scheme), _facets(base)
        if theirs.builtins and theirs.builtins[0] not in ours.builtins:
            self.report(path, f"not derived from the base's {theirs.builtins[0]}")
        self.enumeration(path, ours, theirs, base)
        for group in theirs.patterns:
            if not any(mine <= group for mine in ours.patterns):
                self.report(path, f"base pattern {' | '.join(sorted(group))} missing")
        self.at_most(path, "maxLength", ours.max_length, theirs.max_length)
        self.at_most(path, "totalDigits", ours.total_digits, theirs.total_digits)
        self.at_most(path, "fractionDigits", ours.fraction_digits, theirs.fraction_digits)
        if theirs.min_length is not None and (ours.min_length or 0) < theirs.min_length:
            self.report(path, f"minLength {ours.min_length or 0} < base {theirs.min_length}")
        if theirs.lower is not None and (
            ours.lower is None or not _lower_within(ours.lower, theirs.lower)
        ):
            self.report(path, f"lower bound {_bound(ours.lower)} wider than {_bound(theirs.lower)}")
        if theirs.upper is not None and (
            ours.upper is None or not _upper_within(ours.upper, theirs.upper)
        ):
            self.report(path, f"upper bound {_bound(ours.upper)} wider than {_bound(theirs.upper)}")

    def enumeration(self, path: str, ours: _Facets, theirs: _Facets, base: Any) -> None:
        if theirs.enumeration is not None and ours.enumeration is None:
            self.report(path, "no enumeration, the base has one")
            return
        for value in ours.enumeration or ():
            if theirs.enumeration is not None and value not in theirs.enumeration:
                self.report(path, f"enumeration value {value!r} not in the base")
            elif not base.is_valid(_lexical(value)):
                self.report(path, f"enumeration value {value!r} is invalid in the base")

    def at_most(self, path: str, facet: str, ours: int | None, theirs: int | None) -> None:
        if theirs is not None and (ours is None or ours > theirs):
            self.report(path, f"{facet} {ours} wider than base {theirs}")


def _lexical(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _bound(bound: Bound | None) -> str:
    if bound is None:
        return "none"
    return f"{'exclusive' if bound[1] else 'inclusive'} {bound[0]}"


def _pairs(scheme: Path, base: Path) -> Iterable[tuple[Path, Path]]:
    if scheme.is_dir():
        for path in sorted(scheme.glob("*.xsd")):
            yield path, base / path.name
    else:
        yield scheme, base


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scheme", type=Path, help="scheme .xsd file or directory")
    parser.add_argument("base", type=Path, help="base .xsd file or directory")
    args = parser.parse_args(argv)
    failed = False
    for scheme, base in _pairs(args.scheme, args.base):
        violations = restriction_violations(load(scheme), load(base))
        failed = failed or bool(violations)
        print(f"{scheme.name}: {'not a restriction' if violations else 'restriction'}")
        for violation in violations:
            print(f"  {violation}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
