"""Aliases: what an alias is, its canonical form, and the directory's errors.

An alias (RULEBOOK §5) is a key a payer can use instead of an account: a `VPA`
(`handle@psp`), an e-mail address (`EMAL`), a telephone number (`TELE`, E.164) or a
random `EVP` key the directory generates. Every alias has one canonical text, and the
directory only ever stores, compares and looks up that text: `normalize` turns what a
user typed into it or refuses it with a message that says what is wrong. Normalising a
canonical value gives it back unchanged, so a value can be normalised at every boundary
without harm.

An `Alias` points one canonical (kind, value) at one participant's account and display
name. Its `version` is the sequence number of the directory change that last wrote it
(0 while the change is not stored yet), which is what makes replaying the change history
idempotent (see `directory.py`).

Mistakes of a caller (a bank through the API or acmt messages, an operator's import)
raise a `DirectoryError`: a `CallerError` with a short stable `code` an adapter can map
to its own answer, the request `field` at fault and a message for a person. Mistakes
only a bug can make (a naive datetime, a negative version, an unknown status) raise
`ValueError` instead, as the core's types do.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Final

from switch.core.errors import CallerError
from switch.core.rules import normalize_bicfi

__all__ = [
    "DIRECTORY_ERROR_CODES",
    "Alias",
    "AliasKey",
    "AliasStatus",
    "AliasType",
    "AlreadyRegistered",
    "ClaimExists",
    "ClaimNotDue",
    "ClaimNotOpen",
    "DirectoryError",
    "EvpNotPortable",
    "InvalidAccount",
    "InvalidAlias",
    "InvalidFile",
    "InvalidName",
    "InvalidParticipant",
    "NoChange",
    "NotFound",
    "NotOwner",
    "SameOwner",
    "check_account",
    "check_name",
    "check_participant",
    "directory_error",
    "mask_name",
    "new_evp",
    "normalize",
    "parse_alias_type",
    "require_aware",
]


class AliasType(StrEnum):
    """The kinds of alias the scheme knows (the `Prxy/Tp` of a pacs.008)."""

    VPA = "VPA"
    EMAL = "EMAL"
    TELE = "TELE"
    EVP = "EVP"


class AliasStatus(StrEnum):
    """Whether an alias resolves: only `active` ones do; `deleted` frees the value."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    DELETED = "deleted"


AliasKey = tuple[AliasType, str]
"""An alias's identity: its kind and canonical value."""


# --- errors -------------------------------------------------------------------------------

DIRECTORY_ERROR_CODES: Final[Mapping[str, str]] = {
    "invalid_alias": "the alias is malformed",
    "invalid_account": "the account is malformed",
    "invalid_name": "the name is malformed",
    "invalid_participant": "the participant id is malformed",
    "invalid_file": "the import file is malformed",
    "not_owner": "the alias belongs to another participant",
    "duplicate": "the alias is already registered",
    "not_found": "the alias is not registered",
    "no_change": "nothing to change",
    "evp_not_portable": "an EVP cannot be moved to another participant",
    "claim_not_open": "the claim is no longer open",
    "claim_not_due": "the claim period has not run out yet",
    "claim_exists": "a portability claim is open on the alias",
    "same_owner": "the claimant already owns the alias",
}
"""Every code a DirectoryError may carry, with the default text for it."""


class DirectoryError(CallerError):
    """A directory request refused: `code` says why, `field` which request field is at fault."""

    code: str

    def __init__(self, code: str, message: str | None = None, *, field: str | None = None) -> None:
        try:
            default = DIRECTORY_ERROR_CODES[code]
        except KeyError:
            raise ValueError(f"unknown directory error code {code!r}") from None
        super().__init__(message if message is not None else default, field=field)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.code, self.message, self.field))


class _CodedError(DirectoryError):
    """A DirectoryError whose class fixes the code."""

    fixed_code: ClassVar[str]
    default_field: ClassVar[str | None] = None

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(
            self.fixed_code, message, field=field if field is not None else self.default_field
        )


class InvalidAlias(_CodedError):
    """The alias type or value is malformed."""

    fixed_code = "invalid_alias"
    default_field = "value"


class InvalidAccount(_CodedError):
    """The account identifier is malformed."""

    fixed_code = "invalid_account"
    default_field = "account"


class InvalidName(_CodedError):
    """The display name is empty, blank, too long or not printable."""

    fixed_code = "invalid_name"
    default_field = "name"


class InvalidParticipant(_CodedError):
    """The participant id is not a BICFI."""

    fixed_code = "invalid_participant"
    default_field = "participant"


class InvalidFile(_CodedError):
    """An import file is malformed (not UTF-8, bad CSV or JSON shape, missing column)."""

    fixed_code = "invalid_file"


class NotOwner(_CodedError):
    """The request needs the alias's owner (or the claim's party) and came from another."""

    fixed_code = "not_owner"
    default_field = "participant"


class AlreadyRegistered(_CodedError):
    """The alias (or claim id) is already registered, by anyone."""

    fixed_code = "duplicate"
    default_field = "value"


class NotFound(_CodedError):
    """The alias is not registered (or deleted), or the claim is unknown."""

    fixed_code = "not_found"
    default_field = "value"


class NoChange(_CodedError):
    """An update that names nothing to change."""

    fixed_code = "no_change"


class EvpNotPortable(_CodedError):
    """A claim on an EVP: random keys stay with the participant that generated them."""

    fixed_code = "evp_not_portable"
    default_field = "type"


class ClaimNotOpen(_CodedError):
    """The claim was already confirmed, rejected, cancelled or completed, or has run out."""

    fixed_code = "claim_not_open"
    default_field = "claim"


class ClaimNotDue(_CodedError):
    """An expiry asked for before the claim period ran out."""

    fixed_code = "claim_not_due"
    default_field = "claim"


class ClaimExists(_CodedError):
    """A portability claim is already open on the alias."""

    fixed_code = "claim_exists"
    default_field = "value"


class SameOwner(_CodedError):
    """A claim by the participant that already owns the alias."""

    fixed_code = "same_owner"
    default_field = "participant"


_ERROR_CLASSES: Final[Mapping[str, type[_CodedError]]] = {
    cls.fixed_code: cls
    for cls in (
        InvalidAlias,
        InvalidAccount,
        InvalidName,
        InvalidParticipant,
        InvalidFile,
        NotOwner,
        AlreadyRegistered,
        NotFound,
        NoChange,
        EvpNotPortable,
        ClaimNotOpen,
        ClaimNotDue,
        ClaimExists,
        SameOwner,
    )
}
assert set(_ERROR_CLASSES) == set(DIRECTORY_ERROR_CODES)


def directory_error(
    code: str, message: str | None = None, *, field: str | None = None
) -> DirectoryError:
    """The DirectoryError subclass for `code`; ValueError for a code the directory never uses."""
    try:
        cls = _ERROR_CLASSES[code]
    except KeyError:
        raise ValueError(f"unknown directory error code {code!r}") from None
    return cls(message, field=field)


def _rebuild(code: str, message: str, field: str | None) -> DirectoryError:
    """The error again, exactly, from its parts (how a DirectoryError is unpickled)."""
    error = directory_error(code, message)
    error.field = field
    return error


# --- canonical values ---------------------------------------------------------------------

_VPA: Final = re.compile(r"(?P<local>[a-z0-9._-]{1,64})@(?P<psp>[a-z0-9]{2,32})")
_EMAIL_LOCAL: Final = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TELE_SEPARATORS: Final = str.maketrans("", "", " -.()")
_DIGITS: Final = re.compile(r"[0-9]+")
_EVP: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_ACCOUNT: Final = re.compile(r"[A-Za-z0-9/-]{1,34}")
_BICFI: Final = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")

MAX_EMAIL: Final = 254
"""Longest e-mail alias, in characters."""
MAX_NAME: Final = 140
"""Longest display name, in characters (ISO 20022 `Max140Text`)."""
MASK: Final = "****"
"""What stands for the rest of each word of a masked name, whatever its length."""


def parse_alias_type(text: str) -> AliasType:
    """The AliasType named by `text` (any case); InvalidAlias on field "type" otherwise."""
    try:
        return AliasType(text.strip().upper())
    except ValueError:
        known = ", ".join(AliasType)
        raise InvalidAlias(
            f"unknown alias type {text!r}: use one of {known}", field="type"
        ) from None


def _vpa(value: str) -> str:
    text = value.strip()
    if not text.isascii():
        raise InvalidAlias("a VPA may contain only ASCII letters, digits and . _ -")
    text = text.lower()
    if text.count("@") != 1:
        raise InvalidAlias(f"a VPA is handle@psp with exactly one @: {value!r}")
    local, psp = text.split("@")
    if not _VPA.fullmatch(text):
        if not 1 <= len(local) <= 64:
            raise InvalidAlias(f"the handle of a VPA must be 1 to 64 characters: {value!r}")
        if not 2 <= len(psp) <= 32:
            raise InvalidAlias(f"the psp of a VPA must be 2 to 32 characters: {value!r}")
        if not re.fullmatch(r"[a-z0-9]+", psp):
            raise InvalidAlias(f"the psp of a VPA may contain only letters and digits: {value!r}")
        raise InvalidAlias(
            f"the handle of a VPA may contain only letters, digits and . _ -: {value!r}"
        )
    if local.startswith(".") or local.endswith("."):
        raise InvalidAlias(f"the handle of a VPA may not start or end with a dot: {value!r}")
    return text


def _email(value: str) -> str:
    text = value.strip()
    if not text.isascii():
        raise InvalidAlias("an e-mail alias may contain only ASCII characters")
    text = text.lower()
    if len(text) > MAX_EMAIL:
        raise InvalidAlias(f"an e-mail alias is at most {MAX_EMAIL} characters, not {len(text)}")
    if text.count("@") != 1:
        raise InvalidAlias(f"an e-mail address has exactly one @: {value!r}")
    local, domain = text.split("@")
    if not 1 <= len(local) <= 64 or not _EMAIL_LOCAL.fullmatch(local):
        raise InvalidAlias(f"the part of an e-mail address before the @ is malformed: {value!r}")
    labels = domain.split(".")
    if len(labels) < 2:
        raise InvalidAlias(f"the domain of an e-mail address must be dotted: {value!r}")
    for label in labels:
        if not _DOMAIN_LABEL.fullmatch(label):
            raise InvalidAlias(
                f"the domain of an e-mail address has a malformed label {label!r}: {value!r}"
            )
    if labels[-1].isdigit():
        raise InvalidAlias(f"the top-level domain of an e-mail address is numeric: {value!r}")
    return text


def _tele(value: str) -> str:
    text = value.strip()
    if not text.startswith("+"):
        raise InvalidAlias(
            f"a telephone alias is E.164 and starts with + and the country code: {value!r}"
        )
    digits = text[1:].translate(_TELE_SEPARATORS)
    if not _DIGITS.fullmatch(digits):
        raise InvalidAlias(
            "a telephone alias is + then digits, separated only by spaces, dashes, dots "
            f"or parentheses: {value!r}"
        )
    if not 8 <= len(digits) <= 15:
        raise InvalidAlias(f"a telephone alias has 8 to 15 digits, not {len(digits)}: {value!r}")
    if digits[0] == "0":
        raise InvalidAlias(f"a country code never starts with 0: {value!r}")
    return "+" + digits


def _evp(value: str) -> str:
    text = value.strip().lower()
    if not _EVP.fullmatch(text):
        raise InvalidAlias(
            f"an EVP is a UUID version 4, as 8-4-4-4-12 hexadecimal digits: {value!r}"
        )
    return text


_NORMALIZERS: Final[Mapping[AliasType, Callable[[str], str]]] = {
    AliasType.VPA: _vpa,
    AliasType.EMAL: _email,
    AliasType.TELE: _tele,
    AliasType.EVP: _evp,
}


def normalize(kind: AliasType, value: str) -> str:
    """The canonical text of alias `value` of `kind`; InvalidAlias saying what is wrong."""
    if not isinstance(value, str):
        raise InvalidAlias(f"an alias value is text, not {type(value).__name__}")
    try:
        normalizer = _NORMALIZERS[kind]
    except KeyError:
        raise InvalidAlias(f"unknown alias type {kind!r}", field="type") from None
    return normalizer(value)


def new_evp(random: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh random EVP: a UUID version 4 from 16 bytes of `random`."""
    raw = random(16)
    if len(raw) != 16:
        raise ValueError(f"the randomness source gave {len(raw)} bytes, not 16")
    return str(uuid.UUID(bytes=raw, version=4))


def mask_name(name: str) -> str:
    """`name` as a lookup shows it: each word's first letter then `****` ("A**** S****")."""
    initials = [next((c for c in word if c.isalnum()), "") for word in name.split()]
    masked = [initial + MASK for initial in initials if initial]
    return " ".join(masked) if masked else MASK


# --- field checks shared by aliases, claims and decisions ---------------------------------


def check_participant(participant: str) -> str:
    """The participant id as the directory stores it (an 11-character BICFI)."""
    if not isinstance(participant, str) or not _BICFI.fullmatch(participant):
        raise InvalidParticipant(f"a participant id is a BICFI: {participant!r}")
    return normalize_bicfi(participant)


def check_account(account: str) -> str:
    """`account` if it is 1 to 34 characters of letters, digits, - and /; InvalidAccount."""
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise InvalidAccount(
            f"an account is 1 to 34 letters, digits, dashes or slashes: {account!r}"
        )
    return account


def check_name(name: str) -> str:
    """`name` if it is 1 to 140 printable characters, not blank; InvalidName otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName("a name may not be empty or blank")
    if len(name) > MAX_NAME:
        raise InvalidName(f"a name is at most {MAX_NAME} characters, not {len(name)}")
    if not name.isprintable():
        raise InvalidName("a name may not contain control characters")
    return name


def require_aware(at: datetime, what: str) -> None:
    """ValueError unless `at` is a datetime that knows its offset from UTC."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime: {at!r}")


# --- the alias ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Alias:
    """One alias: its canonical (kind, value) points at a participant's account and name."""

    kind: AliasType
    value: str
    participant: str
    account: str
    name: str
    status: AliasStatus
    version: int
    created_at: datetime
    updated_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AliasType(self.kind))
        object.__setattr__(self, "status", AliasStatus(self.status))
        if normalize(self.kind, self.value) != self.value:
            raise InvalidAlias(f"{self.kind} alias value is not in canonical form: {self.value!r}")
        if check_participant(self.participant) != self.participant:
            raise InvalidParticipant(f"participant id must have 11 characters: {self.participant}")
        check_account(self.account)
        check_name(self.name)
        if type(self.version) is not int or self.version < 0:
            raise ValueError(f"alias version must be an int >= 0: {self.version!r}")
        require_aware(self.created_at, "created_at")
        require_aware(self.updated_at, "updated_at")

    @property
    def key(self) -> AliasKey:
        """The alias's identity: (kind, canonical value)."""
        return (self.kind, self.value)

    @property
    def active(self) -> bool:
        """True if the alias resolves (its status is `active`)."""
        return self.status is AliasStatus.ACTIVE

    @property
    def masked_name(self) -> str:
        """The name as a lookup by another participant shows it."""
        return mask_name(self.name)
