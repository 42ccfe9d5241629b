"""Business rules of a credit transfer, as small validators that return every violation.

The engine parses a pacs.008 into `PaymentFacts` (only what the rules need) and calls
`check_payment(facts, ctx)`. Each rule is a function `(facts, ctx) -> Iterable[Violation]`
that returns nothing when the rule holds; `check_payment` runs them all, in the order
of the rulebook flow (RULEBOOK §3 step 2, codes of §4), and returns all violations in
that order. Nothing raises for a peer's mistake: the engine replies with the first
violation's reason code and may log the rest (`Violation.error()` turns one into the
matching `PeerError` at the boundary).

Participants are looked up through a `ParticipantDirectory`, built once from the
participant list and reused by every payment of a batch: it indexes participants by
BICFI (8- and 11-character forms are equivalent) and by clearing member id, since a
message may name an agent by either. The creditor agent may also be the switch itself
(member id `000000000` or the switch BICFI): that means "pay this alias", and resolving
the alias is the directory's job after these rules.

Rules that are not about the message alone are not here: duplicates (store), alias
resolution (directory), velocity and screening (risk), and insufficient position
(AM04), which the ledger decides atomically when it reserves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final

from switch.core.errors import InternalError, PeerError, peer_error
from switch.core.money import Money, to_minor

__all__ = [
    "RULES",
    "AgentRef",
    "Participant",
    "ParticipantDirectory",
    "ParticipantStatus",
    "PaymentFacts",
    "Rule",
    "RuleContext",
    "SchemeRules",
    "Violation",
    "amount_within_limits",
    "check_payment",
    "creditor_agent_active",
    "creditor_agent_known",
    "currency_is_scheme_currency",
    "debtor_agent_active",
    "normalize_bicfi",
    "sender_is_instructing_agent",
    "single_transaction",
]

_BICFI: Final = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_MEMBER_ID: Final = re.compile(r"[0-9]{9}")

# ISO element paths named by violations (relative to the pacs.008 Document or AppHdr).
F_NB_OF_TXS: Final = "GrpHdr/NbOfTxs"
F_HEADER_FROM: Final = "AppHdr/Fr/FIId/FinInstnId"
F_INSTG_AGT: Final = "CdtTrfTxInf/InstgAgt/FinInstnId"
F_DBTR_AGT: Final = "CdtTrfTxInf/DbtrAgt/FinInstnId"
F_CDTR_AGT: Final = "CdtTrfTxInf/CdtrAgt/FinInstnId"
F_AMOUNT: Final = "CdtTrfTxInf/IntrBkSttlmAmt"
F_CURRENCY: Final = "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy"


def normalize_bicfi(bicfi: str) -> str:
    """The 11-character form of a BICFI (an 8-character BIC means branch `XXX`)."""
    return bicfi + "XXX" if len(bicfi) == 8 else bicfi


class ParticipantStatus(StrEnum):
    """Whether a participant may send and receive payments (only `active` may)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    SIGNED_OFF = "signed_off"


@dataclass(frozen=True, kw_only=True, slots=True)
class Participant:
    """A member bank: its BICFI (the participant id), ABA member id, status and limit."""

    id: str
    member_id: str
    name: str
    status: ParticipantStatus = ParticipantStatus.ACTIVE
    limit: Money | None = None

    def __post_init__(self) -> None:
        if not _BICFI.fullmatch(self.id):
            raise ValueError(f"participant id must be a BICFI: {self.id!r}")
        if not _MEMBER_ID.fullmatch(self.member_id):
            raise ValueError(
                f"participant {self.id}: member id must be 9 digits: {self.member_id!r}"
            )
        if not self.name:
            raise ValueError(f"participant {self.id} has an empty name")
        object.__setattr__(self, "status", ParticipantStatus(self.status))
        if self.limit is not None and self.limit.minor <= 0:
            raise ValueError(f"participant {self.id} limit must be positive: {self.limit}")

    @property
    def active(self) -> bool:
        """True if the participant may send and receive payments."""
        return self.status is ParticipantStatus.ACTIVE


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentRef:
    """An agent as a message names it: by BICFI, by clearing member id, or both."""

    bicfi: str | None = None
    member_id: str | None = None

    def __post_init__(self) -> None:
        if self.bicfi is None and self.member_id is None:
            raise ValueError("an agent needs a BICFI or a member id")

    def __str__(self) -> str:
        return " / ".join(x for x in (self.bicfi, self.member_id) if x is not None)


@dataclass(frozen=True, kw_only=True, slots=True)
class PaymentFacts:
    """What the business rules need to know about one credit transfer transaction."""

    sender: str
    """Participant id (BICFI) the transport authenticated."""
    header_from: str | None
    """AppHdr `Fr` BICFI; None when the transport carries no header for this transaction."""
    instructing_agent: AgentRef | None
    debtor_agent: AgentRef
    creditor_agent: AgentRef
    amount: Decimal
    currency: str
    transactions_in_message: int

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"amount must be a Decimal, not {type(self.amount).__name__}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SchemeRules:
    """The scheme parameters the rules enforce (from `config/`)."""

    currency: str = "USD"
    exponent: int = 2
    payment_limit: Money
    switch_member_id: str = "000000000"
    switch_bicfi: str

    def __post_init__(self) -> None:
        if self.payment_limit.currency != self.currency:
            raise ValueError(
                f"payment limit currency {self.payment_limit.currency} "
                f"is not the scheme currency {self.currency}"
            )
        if self.payment_limit.exponent != self.exponent:
            raise ValueError(f"payment limit exponent is not the scheme exponent {self.exponent}")
        if self.payment_limit.minor <= 0:
            raise ValueError(f"payment limit must be positive: {self.payment_limit}")
        if not _MEMBER_ID.fullmatch(self.switch_member_id):
            raise ValueError(f"switch member id must be 9 digits: {self.switch_member_id!r}")
        if not _BICFI.fullmatch(self.switch_bicfi):
            raise ValueError(f"switch BICFI is not a BICFI: {self.switch_bicfi!r}")
        object.__setattr__(self, "switch_bicfi", normalize_bicfi(self.switch_bicfi))


class ParticipantDirectory(Mapping[str, Participant]):
    """Participants by id, with indexes by BICFI and by member id; built once, read often."""

    __slots__ = ("_by_bicfi", "_by_id", "_by_member")

    def __init__(self, participants: Iterable[Participant]) -> None:
        by_id: dict[str, Participant] = {}
        by_bicfi: dict[str, Participant] = {}
        by_member: dict[str, Participant] = {}
        for p in participants:
            bicfi = normalize_bicfi(p.id)
            if p.id in by_id or bicfi in by_bicfi:
                raise ValueError(f"participant {p.id} is listed twice")
            if p.member_id in by_member:
                raise ValueError(
                    f"member id {p.member_id} of {p.id} already belongs to "
                    f"{by_member[p.member_id].id}"
                )
            by_id[p.id] = by_bicfi[bicfi] = by_member[p.member_id] = p
        self._by_id = by_id
        self._by_bicfi = by_bicfi
        self._by_member = by_member

    def __getitem__(self, key: str) -> Participant:
        return self._by_id[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def by_bicfi(self, bicfi: str) -> Participant | None:
        """The participant with BICFI `bicfi` (8 or 11 characters), if any."""
        return self._by_bicfi.get(normalize_bicfi(bicfi))

    def by_member_id(self, member_id: str) -> Participant | None:
        """The participant with clearing member id `member_id`, if any."""
        return self._by_member.get(member_id)

    def resolve(self, agent: AgentRef) -> Participant | None:
        """The participant `agent` names; None if unknown or if its identifiers disagree."""
        bicfi, member_id = agent.bicfi, agent.member_id
        if bicfi is None:
            return self._by_member.get(member_id) if member_id is not None else None
        p = self._by_bicfi.get(normalize_bicfi(bicfi))
        if member_id is not None and (p is None or p.member_id != member_id):
            return None
        return p


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleContext:
    """The scheme rules and participant directory a batch of payments is checked against."""

    rules: SchemeRules
    participants: Mapping[str, Participant]
    directory: ParticipantDirectory = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        participants = self.participants
        if not isinstance(participants, ParticipantDirectory):
            participants = ParticipantDirectory(participants.values())
            object.__setattr__(self, "participants", participants)
        object.__setattr__(self, "directory", participants)

    def resolve(self, agent: AgentRef) -> Participant | None:
        """The participant `agent` names, by BICFI or member id; None if unknown."""
        return self.directory.resolve(agent)

    def is_switch(self, agent: AgentRef) -> bool:
        """True if every identifier of `agent` names the switch itself (pay an alias)."""
        rules = self.rules
        bicfi, member_id = agent.bicfi, agent.member_id
        return (bicfi is None or normalize_bicfi(bicfi) == rules.switch_bicfi) and (
            member_id is None or member_id == rules.switch_member_id
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Violation:
    """One broken rule: ISO reason code, ISO element path at fault, and what was wrong."""

    reason: str
    field: str
    text: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.reason) <= 4:
            raise ValueError(f"ISO reason code must be 1-4 characters: {self.reason!r}")

    def error(self) -> PeerError:
        """The PeerError this violation is answered with."""
        return peer_error(self.reason, self.text, field=self.field)


Rule = Callable[[PaymentFacts, RuleContext], Iterable[Violation]]
"""A business rule: the violations of one payment, empty when it holds."""

_OK: Final[tuple[Violation, ...]] = ()


def single_transaction(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """FF01: a real-time pacs.008 carries exactly one transaction."""
    n = facts.transactions_in_message
    if n == 1:
        return _OK
    return (
        Violation(
            reason="FF01",
            field=F_NB_OF_TXS,
            text=f"a real-time message carries exactly one transaction, not {n}",
        ),
    )


def sender_is_instructing_agent(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """RC01: AppHdr Fr, InstgAgt (if present) and DbtrAgt all name the sender."""
    directory = ctx.directory
    sender = directory.by_bicfi(facts.sender)
    found: list[Violation] | None = None
    if facts.header_from is not None and (
        sender is None or directory.by_bicfi(facts.header_from) is not sender
    ):
        found = [
            Violation(
                reason="RC01",
                field=F_HEADER_FROM,
                text=f"header sender {facts.header_from} is not the sender {facts.sender}",
            )
        ]
    for agent, path, role in (
        (facts.instructing_agent, F_INSTG_AGT, "instructing agent"),
        (facts.debtor_agent, F_DBTR_AGT, "debtor agent"),
    ):
        if agent is not None and (sender is None or directory.resolve(agent) is not sender):
            v = Violation(
                reason="RC01", field=path, text=f"{role} {agent} is not the sender {facts.sender}"
            )
            if found is None:
                found = [v]
            else:
                found.append(v)
    return _OK if found is None else found


def debtor_agent_active(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """AG01: the debtor agent is active (not suspended or signed off)."""
    p = ctx.directory.resolve(facts.debtor_agent)
    if p is None or p.status is ParticipantStatus.ACTIVE:
        return _OK
    return (Violation(reason="AG01", field=F_DBTR_AGT, text=f"debtor agent {p.id} is {p.status}"),)


def currency_is_scheme_currency(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """AM03: the settlement currency is the scheme currency."""
    if facts.currency == ctx.rules.currency:
        return _OK
    return (
        Violation(
            reason="AM03",
            field=F_CURRENCY,
            text=f"currency {facts.currency} is not the scheme currency {ctx.rules.currency}",
        ),
    )


def amount_within_limits(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """FF01: amount > 0 with at most the scheme's decimals; AM02: within scheme and DA limit."""
    rules = ctx.rules
    try:
        minor = to_minor(facts.amount, rules.exponent)
    except ValueError as e:
        return (Violation(reason="FF01", field=F_AMOUNT, text=str(e)),)
    if minor <= 0:
        return (
            Violation(reason="FF01", field=F_AMOUNT, text=f"amount {facts.amount} is not positive"),
        )
    if facts.currency != rules.currency:
        return _OK  # AM03 already; limits in another currency mean nothing
    limit = rules.payment_limit
    if minor > limit.minor:
        return (
            Violation(
                reason="AM02",
                field=F_AMOUNT,
                text=f"amount {facts.amount} is over the scheme limit {limit}",
            ),
        )
    p = ctx.directory.resolve(facts.debtor_agent)
    if p is None or p.limit is None or minor <= p.limit.minor:
        return _OK
    if p.limit.currency != rules.currency or p.limit.exponent != rules.exponent:
        raise InternalError(f"participant {p.id} limit {p.limit} is not in the scheme currency")
    return (
        Violation(
            reason="AM02",
            field=F_AMOUNT,
            text=f"amount {facts.amount} is over the limit {p.limit} of {p.id}",
        ),
    )


def creditor_agent_known(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """RC04: the creditor agent is a participant, or the switch itself (pay an alias)."""
    agent = facts.creditor_agent
    if ctx.directory.resolve(agent) is not None or ctx.is_switch(agent):
        return _OK
    return (
        Violation(
            reason="RC04", field=F_CDTR_AGT, text=f"creditor agent {agent} is not a participant"
        ),
    )


def creditor_agent_active(facts: PaymentFacts, ctx: RuleContext) -> Iterable[Violation]:
    """AB08: the creditor agent is active (not suspended or signed off)."""
    p = ctx.directory.resolve(facts.creditor_agent)
    if p is None or p.status is ParticipantStatus.ACTIVE:
        return _OK
    return (
        Violation(reason="AB08", field=F_CDTR_AGT, text=f"creditor agent {p.id} is {p.status}"),
    )


RULES: Final[Sequence[Rule]] = (
    single_transaction,
    sender_is_instructing_agent,
    debtor_agent_active,
    currency_is_scheme_currency,
    amount_within_limits,
    creditor_agent_known,
    creditor_agent_active,
)
"""The business rules, in rulebook-flow order."""


def check_payment(facts: PaymentFacts, ctx: RuleContext) -> list[Violation]:
    """Every violation of the business rules by one payment, in rulebook-flow order."""
    found: list[Violation] = []
    for rule in RULES:
        found.extend(rule(facts, ctx))
    return found
