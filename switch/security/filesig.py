"""XML-DSig of batch files: the scheme's signature profile over messages read as streams.

A batch file (RULEBOOK §7) is one BizMsg like any transport message, signed with the same
profile (`switch.security.xmldsig`: one enveloped signature over the whole message in
`AppHdr/Sgntr`, exclusive c14n, SHA-256), but it can hold a hundred thousand transactions:
too large to build as a tree. Here the canonical form is streamed through the hash
instead: lxml's C14N writer target (C14N 2.0) is fed the file in chunks and writes into
SHA-256, with the `ds:Signature` element excluded (the enveloped-signature transform).

For the messages of the scheme (no comments, no processing instructions, no DTD, no
`xml:` attributes, no QNames in content: the reader refuses the first three before the
digest is taken) C14N 2.0 without prefix rewriting writes exactly what exclusive c14n 1.0
writes: the same namespace declarations at the same elements (only those visibly used,
where they are first used), the same attribute order and escaping. The tests hold it to
the tree implementation: what `Signer.sign` signs verifies here, and what `sign_file`
signs verifies with `Verifier.verify`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from lxml import etree

from switch.security.xmldsig import DS_NS, Signer

__all__ = ["SGNTR_PLACEHOLDER", "canonical_digest", "sign_file"]

SIGNATURE_TAG: Final = f"{{{DS_NS}}}Signature"
SGNTR_PLACEHOLDER: Final = b"<Sgntr></Sgntr>"
"""The empty `AppHdr/Sgntr` a file to be signed by `sign_file` carries (in its first 64 KiB)."""
_CHUNK: Final = 1 << 20
_HEAD: Final = 1 << 16


def canonical_digest(path: Path, *, exclude_signature: bool = True) -> bytes:
    """SHA-256 of the canonical form of the XML file at `path` (read in chunks).

    With `exclude_signature`, every `ds:Signature` element is left out (its tail text
    stays), as the enveloped-signature transform does. The parser resolves no entity and
    loads nothing from the network; the caller refuses DTDs before trusting the result.
    Raises etree.XMLSyntaxError for a file that is not well-formed.

    A scheme message (a BizMsg whose AppHdr and Document are each in their own default
    namespace, without prefixes or attributes on the envelope) is canonicalised piece by
    piece with libxml2's exclusive c14n: the AppHdr, then each child of the message
    element (the group header, each transaction), stitched together with the envelope's
    tags and text; a statement's, report's or notification's entries are pieces of their
    own. Any other shape goes through lxml's C14N 2.0 writer (slower, general).
    """
    digest = _stitched_digest(path, exclude_signature)
    if digest is not None:
        return digest
    return _c14n2_digest(path, exclude_signature)


def _c14n2_digest(path: Path, exclude_signature: bool) -> bytes:
    h = hashlib.sha256()
    update = h.update

    def write(text: str) -> None:
        update(text.encode())

    target = etree.C14NWriterTarget(
        write,
        with_comments=False,
        exclude_tags=[SIGNATURE_TAG] if exclude_signature else None,
    )
    parser = etree.XMLParser(
        target=target,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,
    )
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            parser.feed(chunk)
    parser.close()
    return h.digest()


def _escape_text(text: str | None) -> bytes:
    """A text node as c14n writes it."""
    if not text:
        return b""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#xD;")
        .encode()
    )


def _plain(el: etree._Element, namespace: str | None) -> bool:
    """`el` is unprefixed, without attributes, in `namespace` (when given)."""
    if el.prefix is not None or len(el.attrib):
        return False
    ns = etree.QName(el).namespace
    return ns is not None and (namespace is None or ns == namespace)


def _c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False)


class _NotStitchable(Exception):
    """The file is not of the shape `_stitched_digest` handles."""


_CONTAINERS: Final = frozenset({"Stmt", "Rpt", "Ntfctn"})
"""Children of a message element that hold its many parts themselves (a camt.052/053/054
account's entries): streamed as tags, their own children canonicalised one by one."""


class _Open:
    """An element of the envelope streamed as tags (not canonicalised as one unit)."""

    __slots__ = ("children", "el", "role")

    def __init__(self, el: etree._Element, role: str) -> None:
        self.el = el
        self.role = role
        self.children = 0


def _stitched_digest(path: Path, exclude_signature: bool) -> bytes | None:
    """The fast path of `canonical_digest`; None when the file is not of its shape.

    The envelope (BizMsg, Document, the message element and any container of
    `_CONTAINERS` under it) is written tag by tag; every other element directly under
    one of them (the AppHdr, the group header, each transaction or entry) is a unit,
    canonicalised whole once parsed, then dropped with the text after it.
    """
    h = hashlib.sha256()
    update = h.update
    context = etree.iterparse(
        str(path),
        events=("start", "end", "comment", "pi"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,
    )
    stack: list[_Open] = []
    unit: etree._Element | None = None  # the unit being parsed
    inner = 0  # elements open inside it
    previous: etree._Element | None = None  # the last closed child of stack[-1]
    env_ns = doc_ns = ""
    try:
        for event, el in context:
            if event == "comment" or event == "pi":
                raise _NotStitchable
            if unit is not None:
                if event == "start":
                    inner += 1
                elif inner:
                    inner -= 1
                else:  # the unit ends
                    if len(stack) == 1:
                        update(_header_unit(el, env_ns, exclude_signature))
                    else:
                        update(_unit(el, doc_ns))
                    previous, unit = el, None
                continue
            if event == "end":  # a streamed element ends
                stack.pop()
                if previous is not None:
                    update(_escape_text(previous.tail))
                    _drop(previous)
                else:
                    update(_escape_text(el.text))
                update(f"</{etree.QName(el).localname}>".encode())
                previous = el if stack else None
                continue
            # an element starts directly under the streamed ones
            if stack:
                parent = stack[-1]
                if previous is None:
                    update(_escape_text(parent.el.text))
                else:
                    update(_escape_text(previous.tail))
                    _drop(previous)
                    previous = None
                parent.children += 1
                role = _role(parent, el, env_ns, doc_ns)
            else:
                if not _plain(el, None):
                    raise _NotStitchable
                role = "envelope"
            name = etree.QName(el)
            if role == "unit":
                unit, inner = el, 0
            elif role == "envelope":
                env_ns = name.namespace or ""
                update(f'<{name.localname} xmlns="{env_ns}">'.encode())
                stack.append(_Open(el, role))
            elif role == "document":
                doc_ns = name.namespace or ""
                update(f'<{name.localname} xmlns="{doc_ns}">'.encode())
                stack.append(_Open(el, role))
            else:  # the message element, or a container under it
                update(f"<{name.localname}>".encode())
                stack.append(_Open(el, role))
    except _NotStitchable:
        return None
    return h.digest()


def _role(parent: _Open, el: etree._Element, env_ns: str, doc_ns: str) -> str:
    """What `el`, the next child of the streamed `parent`, is; raises _NotStitchable."""
    if parent.role == "envelope":
        if parent.children == 1:
            return "unit"  # the AppHdr
        if parent.children == 2 and _plain(el, None) and etree.QName(el).namespace != env_ns:
            return "document"
        raise _NotStitchable
    if parent.role == "document":
        if parent.children == 1 and _plain(el, doc_ns):
            return "message"
        raise _NotStitchable
    container = etree.QName(el).localname in _CONTAINERS and _plain(el, doc_ns)
    return "container" if parent.role == "message" and container else "unit"


def _drop(el: etree._Element) -> None:
    parent = el.getparent()
    el.clear()
    if parent is not None:
        parent.remove(el)


def _unit(el: etree._Element, doc_ns: str) -> bytes:
    """A child of the message element, canonical as it stands in the whole message."""
    if el.prefix is not None or etree.QName(el).namespace != doc_ns:
        raise _NotStitchable
    out = _c14n(el)
    declaration = f' xmlns="{doc_ns}"'.encode()
    local = etree.QName(el).localname.encode()
    start = b"<" + local + declaration
    if not out.startswith(start) or out.count(b"xmlns") != 1:
        raise _NotStitchable
    return b"<" + local + out[len(start) :]


def _header_unit(el: etree._Element, env_ns: str, exclude_signature: bool) -> bytes:
    """The AppHdr, canonical as it stands in the whole message (minus its signature)."""
    if el.prefix is not None or len(el.attrib) or etree.QName(el).namespace == env_ns:
        raise _NotStitchable
    whole = _c14n(el)
    signatures = list(el.iter(SIGNATURE_TAG))
    if exclude_signature and signatures:
        for sig in signatures:
            part = _c14n(sig)
            at = whole.find(part)
            if at < 0 or whole.find(part, at + 1) >= 0:
                raise _NotStitchable
            whole = whole[:at] + whole[at + len(part) :]
    if whole.count(b"xmlns") != 1:
        raise _NotStitchable
    return whole


def sign_file(signer: Signer, unsigned: Path, write: Callable[[bytes], object]) -> None:
    """Write the file `unsigned`, signed by `signer`, through `write`.

    `unsigned` is a BizMsg whose AppHdr holds an empty `Sgntr` written as
    `SGNTR_PLACEHOLDER` (where head.001.001.02 wants it); the signature covers the whole
    message with that Sgntr empty and goes inside it, as `Signer.sign` would put it.
    """
    with open(unsigned, "rb") as f:
        head = f.read(_HEAD)
    at = head.find(SGNTR_PLACEHOLDER)
    if at < 0 or head.find(SGNTR_PLACEHOLDER, at + 1) >= 0:
        raise ValueError(f"{unsigned}: no single empty <Sgntr></Sgntr> in the header to sign")
    signature = signer.signature_over(canonical_digest(unsigned, exclude_signature=False))
    cut = at + len(b"<Sgntr>")
    with open(unsigned, "rb") as f:
        write(f.read(cut))
        write(signature)
        while chunk := f.read(_CHUNK):
            write(chunk)
