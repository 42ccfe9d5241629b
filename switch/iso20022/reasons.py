"""The one registry of ISO 20022 status reason codes the scheme uses.

The switch rejects with the codes of RULEBOOK §4 (ExternalStatusReason1Code); participants
reject with their own codes, which the switch passes through unchanged. Every code the
switch may put on the wire is listed here with the rule it enforces, so a reply can never
carry a code that nobody defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Origin(StrEnum):
    """Who uses a code: the switch itself, or a participant (passed through)."""

    SWITCH = "switch"
    PARTICIPANT = "participant"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasonCode:
    """An ISO ExternalStatusReason1Code with the rule it stands for."""

    code: str
    name: str
    rule: str
    origin: Origin = Origin.SWITCH

    def __post_init__(self) -> None:
        if not (1 <= len(self.code) <= 4 and self.code.isalnum() and self.code.isupper()):
            raise ValueError(f"reason code must be 1-4 upper-case alphanumerics: {self.code!r}")


def _r(code: str, name: str, rule: str, origin: Origin = Origin.SWITCH) -> ReasonCode:
    return ReasonCode(code=code, name=name, rule=rule, origin=origin)


REASONS: Final[Mapping[str, ReasonCode]] = {
    r.code: r
    for r in (
        _r("FF01", "InvalidFileFormat", "schema (XSD) violation"),
        _r("DS0B", "UnknownDataSignFormat", "signature missing, invalid, or key not the sender's"),
        _r("DS0C", "SignerCertificateRevoked", "signing key revoked"),
        _r("DS0D", "SignerCertificateNotValid", "signing key expired"),
        _r("RC01", "BankIdentifierIncorrect", "sender is not the instructing / debtor agent"),
        _r("DUPL", "DuplicatePayment", "duplicate message or transaction identification"),
        _r("AM02", "NotAllowedAmount", "amount over scheme or participant limit"),
        _r("AM03", "NotAllowedCurrency", "currency not the scheme currency"),
        _r("AM04", "InsufficientFunds", "insufficient available position of the debtor agent"),
        _r("AM14", "AmountExceedsAgreedLimit", "velocity / daily volume limit exceeded"),
        _r("RC04", "InvalidCreditorBankIdentifier", "creditor agent unknown"),
        _r("BE23", "AccountProxyInvalid", "alias not found, or not active"),
        _r("AG01", "TransactionForbidden", "debtor agent suspended or signed off"),
        _r("AB08", "OfflineCreditorAgent", "creditor agent suspended or signed off"),
        _r("AB05", "TimeoutCreditorAgent", "creditor agent did not answer in time"),
        _r("RR04", "RegulatoryReason", "blocked by fraud, negative list or sanctions screening"),
        _r("AC03", "InvalidCreditorAccountNumber", "invalid account", Origin.PARTICIPANT),
        _r("AC04", "ClosedAccountNumber", "closed account", Origin.PARTICIPANT),
        _r("AC06", "BlockedAccount", "blocked account", Origin.PARTICIPANT),
        _r("NARR", "Narrative", "reason given in free text", Origin.PARTICIPANT),
    )
}
"""Every reason code the scheme knows, by code."""

SWITCH_REASONS: Final[frozenset[str]] = frozenset(
    code for code, r in REASONS.items() if r.origin is Origin.SWITCH
)
"""The codes the switch itself may reject with."""


def reason(code: str) -> ReasonCode:
    """The registered reason code `code`; KeyError names it if it is not registered."""
    try:
        return REASONS[code]
    except KeyError:
        raise KeyError(f"unregistered ISO reason code {code!r}") from None


def is_well_formed_code(code: str) -> bool:
    """True when `code` has the shape of an ExternalStatusReason1Code (1-4 characters)."""
    return 1 <= len(code) <= 4 and code.isalnum()
