"""One error hierarchy for the switch, keyed by ISO reason code.

Three trees, because three different parties are at fault and each gets a different
answer:

* `PeerError`: the participant sent something the rulebook forbids. Each subclass stands
  for exactly one rule of RULEBOOK §4 and carries, as class attributes, the ISO
  ExternalStatusReason1Code the switch rejects with (`reason`) and a short human text
  for the reply's additional information (`hint`). The instance message says what was
  wrong and `field` names the ISO element path at fault, when there is one.
* `CallerError`: an operator or a command line misused the switch (unknown participant
  in `fund`, a malformed amount). It is reported to the caller, never to a participant.
* `InternalError`: a bug or a broken invariant (an illegal state transition, a ledger
  operation that would drive a position negative). It must never reach a participant
  as a business reject; the engine logs it and fails the unit of work.

`PEER_ERRORS` maps every reason code to its class, so a validator that returns reason
codes (see `rules.py`) can be turned into an exception at the boundary with
`peer_error(reason, text, field=...)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

__all__ = [
    "PEER_ERRORS",
    "AliasNotFound",
    "AmountOverLimit",
    "Blocked",
    "CallerError",
    "CreditorAgentOffline",
    "CreditorAgentTimeout",
    "DebtorAgentInactive",
    "Duplicate",
    "InsufficientPosition",
    "InternalError",
    "KeyExpired",
    "KeyRevoked",
    "NotInstructingAgent",
    "PeerError",
    "SchemaViolation",
    "SignatureInvalid",
    "SwitchError",
    "UnknownCreditorAgent",
    "VelocityExceeded",
    "WrongCurrency",
    "peer_error",
]


class SwitchError(Exception):
    """Base of every error the switch raises on purpose."""

    field: str | None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def message(self) -> str:
        """The message the error was raised with."""
        return str(self.args[0]) if self.args else ""


class PeerError(SwitchError):
    """The participant broke a rule of the scheme; answered with `reason`."""

    reason: ClassVar[str]
    hint: ClassVar[str]

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message if message is not None else self.hint, field=field)


class CallerError(SwitchError):
    """An operator or command-line caller misused the switch."""


class InternalError(SwitchError):
    """A bug or a broken invariant inside the switch."""


# --- peer errors, one per rule of RULEBOOK §4, in rulebook order -------------------------


class SchemaViolation(PeerError):
    """The message violates the scheme schema or its usage guideline."""

    reason = "FF01"
    hint = "schema violation"


class SignatureInvalid(PeerError):
    """The signature is missing, invalid, or made with a key not the sender's."""

    reason = "DS0B"
    hint = "signature missing or invalid"


class KeyRevoked(PeerError):
    """The signing key has been revoked."""

    reason = "DS0C"
    hint = "signing key revoked"


class KeyExpired(PeerError):
    """The signing key has expired or is not yet valid."""

    reason = "DS0D"
    hint = "signing key expired"


class NotInstructingAgent(PeerError):
    """The sender is not the instructing and debtor agent of the message."""

    reason = "RC01"
    hint = "sender is not the instructing agent"


class Duplicate(PeerError):
    """The message or transaction identification was already used."""

    reason = "DUPL"
    hint = "duplicate message or transaction"


class AmountOverLimit(PeerError):
    """The amount exceeds the scheme or participant limit."""

    reason = "AM02"
    hint = "amount over limit"


class WrongCurrency(PeerError):
    """The currency is not the scheme currency."""

    reason = "AM03"
    hint = "currency not allowed"


class InsufficientPosition(PeerError):
    """The debtor agent's available position does not cover the amount."""

    reason = "AM04"
    hint = "insufficient available position"


class VelocityExceeded(PeerError):
    """A velocity or daily volume limit is exceeded."""

    reason = "AM14"
    hint = "velocity limit exceeded"


class UnknownCreditorAgent(PeerError):
    """The creditor agent is not a participant of the scheme."""

    reason = "RC04"
    hint = "creditor agent unknown"


class AliasNotFound(PeerError):
    """The alias is not registered, or not active."""

    reason = "BE23"
    hint = "alias not found"


class DebtorAgentInactive(PeerError):
    """The debtor agent is suspended or signed off."""

    reason = "AG01"
    hint = "debtor agent not active"


class CreditorAgentOffline(PeerError):
    """The creditor agent is suspended or signed off."""

    reason = "AB08"
    hint = "creditor agent offline"


class CreditorAgentTimeout(PeerError):
    """The creditor agent did not answer within the response timeout."""

    reason = "AB05"
    hint = "creditor agent timeout"


class Blocked(PeerError):
    """Blocked by fraud, negative-list or sanctions screening."""

    reason = "RR04"
    hint = "blocked by screening"


PEER_ERRORS: Final[Mapping[str, type[PeerError]]] = {
    cls.reason: cls
    for cls in (
        SchemaViolation,
        SignatureInvalid,
        KeyRevoked,
        KeyExpired,
        NotInstructingAgent,
        Duplicate,
        AmountOverLimit,
        WrongCurrency,
        InsufficientPosition,
        VelocityExceeded,
        UnknownCreditorAgent,
        AliasNotFound,
        DebtorAgentInactive,
        CreditorAgentOffline,
        CreditorAgentTimeout,
        Blocked,
    )
}
"""Every peer error class, by the ISO reason code it rejects with."""


def peer_error(reason: str, message: str | None = None, *, field: str | None = None) -> PeerError:
    """The peer error for ISO `reason`; InternalError if the switch never uses that code."""
    try:
        cls = PEER_ERRORS[reason]
    except KeyError:
        raise InternalError(f"no peer error for reason code {reason!r}") from None
    return cls(message, field=field)
