"""The alias directory in memory: reads, decisions and the changes that carry them.

The directory is a projection of an append-only history of `Change`s. A change records
one step (an alias registered, updated, (de)activated, deleted; a claim opened,
confirmed, rejected, cancelled or completed) together with the alias as it is after the
step and, for a claim step, the claim after it. The store appends changes and numbers
them (`seq`, from 1); `Directory.apply` folds a stored change into memory.

Every write goes decide, store, apply:

1. a decision method (`register`, `update`, `set_active`, `delete`, `claim`, `confirm`,
   `reject`, `cancel`, `expire`) checks the request against the directory as it is:
   first every input field, then ownership and state. It raises a `DirectoryError`, or
   returns the `Change` to store, with `seq` 0 and versions 0. It changes nothing.
2. the store appends the change and numbers it: `change.stored(seq)` is the same change
   with `seq` set and the alias's (and claim's) `version` set to it. `prior_version`,
   the version of the alias the decision read, lets the store refuse the write if
   another process wrote the alias in between (compare and set); the caller then
   decides again on the fresher directory.
3. `apply(stored)` updates memory. Applying is idempotent and order-proof: the change's
   alias replaces the one held only if its version is newer, and its claim likewise, so
   a change applied twice, or after a newer one, changes nothing, and any order of the
   same changes ends in the same directory. The same method replays the history at
   start and follows other processes' writes.

Nothing here reads a clock or does I/O: every decision takes its time `at` (an aware
datetime), and EVP generation takes an injectable randomness source.

Privacy: a refusal never says which other participant owns an alias, only that
"another participant" does; reads return whole aliases, and masking the name for a
lookup by another participant is the adapter's job (`Alias.masked_name`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from switch.core.errors import InternalError
from switch.directory.aliases import (
    Alias,
    AliasKey,
    AliasStatus,
    AliasType,
    AlreadyRegistered,
    ClaimExists,
    ClaimNotDue,
    ClaimNotOpen,
    DirectoryError,
    EvpNotPortable,
    InvalidAccount,
    InvalidAlias,
    InvalidFile,
    InvalidName,
    InvalidParticipant,
    NoChange,
    NotFound,
    NotOwner,
    SameOwner,
    check_account,
    check_name,
    check_participant,
    new_evp,
    normalize,
    parse_alias_type,
    require_aware,
)
from switch.directory.claims import MAX_CLAIM_ID, MOVES_ALIAS, Claim, ClaimEvent, ClaimState

__all__ = [
    "ALIAS_ACTIONS",
    "CLAIM_ACTIONS",
    "IMPORT_COLUMNS",
    "SYSTEM_ACTOR",
    "Action",
    "Change",
    "Directory",
    "ImportReport",
    "ImportRow",
    "parse_import",
]

SYSTEM_ACTOR: Final = "switch"
"""The actor of the directory's own timed steps (a claim completing)."""

MAX_ACTOR: Final = 140
"""Longest actor text, in characters."""

IMPORT_COLUMNS: Final[tuple[str, ...]] = ("participant", "type", "value", "account", "name")
"""The fields of one row of an operator's bulk import, in file order."""

MAX_IMPORT_ROWS: Final = 100_000
"""Most rows `parse_import` accepts in one file, by default."""

_EVP_ATTEMPTS: Final = 8


class Action(StrEnum):
    """What a change did."""

    REGISTER = "register"
    UPDATE = "update"
    DEACTIVATE = "deactivate"
    ACTIVATE = "activate"
    DELETE = "delete"
    CLAIM = "claim"
    CONFIRM = "confirm"
    REJECT = "reject"
    CANCEL = "cancel"
    COMPLETE = "complete"


ALIAS_ACTIONS: Final[Mapping[Action, frozenset[AliasStatus]]] = {
    Action.REGISTER: frozenset({AliasStatus.ACTIVE}),
    Action.UPDATE: frozenset({AliasStatus.ACTIVE, AliasStatus.INACTIVE}),
    Action.ACTIVATE: frozenset({AliasStatus.ACTIVE}),
    Action.DEACTIVATE: frozenset({AliasStatus.INACTIVE}),
    Action.DELETE: frozenset({AliasStatus.DELETED}),
}
"""Actions on an alias alone, with the statuses the alias may have after each."""

CLAIM_ACTIONS: Final[Mapping[Action, tuple[ClaimState, Literal["owner", "claimant"]]]] = {
    Action.CLAIM: (ClaimState.OPEN, "owner"),
    Action.CONFIRM: (ClaimState.CONFIRMED, "claimant"),
    Action.REJECT: (ClaimState.REJECTED, "owner"),
    Action.CANCEL: (ClaimState.CANCELLED, "owner"),
    Action.COMPLETE: (ClaimState.COMPLETED, "claimant"),
}
"""Claim steps: the claim's state after each, and which party owns the alias after it."""


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor or len(actor) > MAX_ACTOR:
        raise ValueError(f"an actor is 1 to {MAX_ACTOR} characters: {actor!r}")
    if not actor.isprintable() or actor.strip() != actor:
        raise ValueError(f"an actor is printable, without surrounding blanks: {actor!r}")
    return actor


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One step of the directory's history: the alias (and claim) as they are after it."""

    seq: int
    """The change's number in the history, from 1; 0 until the store appends it."""
    at: datetime
    actor: str
    """Who asked: a participant id, `operator:<name>`, or `switch` for a timed step."""
    action: str
    """One of `Action` (a plain string is accepted and made an `Action`)."""
    alias: Alias
    claim: Claim | None
    prior_version: int = 0
    """The version of the alias the decision read (0 if there was none)."""

    def __post_init__(self) -> None:
        if type(self.seq) is not int or self.seq < 0:
            raise ValueError(f"change seq must be an int >= 0: {self.seq!r}")
        require_aware(self.at, "change time")
        _check_actor(self.actor)
        action = Action(self.action)
        object.__setattr__(self, "action", action)
        if type(self.prior_version) is not int or self.prior_version < 0:
            raise ValueError(f"prior version must be an int >= 0: {self.prior_version!r}")
        if self.seq and self.prior_version >= self.seq:
            raise ValueError(f"change {self.seq} read version {self.prior_version}, not older")
        if self.alias.version != self.seq:
            raise ValueError(
                f"change {self.seq}: the alias's version must be the change's seq, "
                f"not {self.alias.version}"
            )
        if action in ALIAS_ACTIONS:
            self._check_alias_step(action)
        else:
            self._check_claim_step(action)

    def _check_alias_step(self, action: Action) -> None:
        if self.claim is not None:
            raise ValueError(f"a {action} change carries no claim")
        if self.alias.status not in ALIAS_ACTIONS[action]:
            raise ValueError(f"a {action} change leaves the alias {self.alias.status}")

    def _check_claim_step(self, action: Action) -> None:
        claim = self.claim
        if claim is None:
            raise ValueError(f"a {action} change carries its claim")
        state, holder = CLAIM_ACTIONS[action]
        if claim.state is not state:
            raise ValueError(f"a {action} change leaves the claim {state}, not {claim.state}")
        if claim.key != self.alias.key:
            raise ValueError(f"claim {claim.id} is for {claim.kind} {claim.value}, not this alias")
        if claim.version != self.seq:
            raise ValueError(f"change {self.seq}: the claim's version must be the change's seq")
        if self.alias.status is AliasStatus.DELETED:
            raise ValueError(f"a {action} change leaves the alias deleted")
        expected = claim.owner if holder == "owner" else claim.claimant
        if self.alias.participant != expected:
            raise ValueError(f"after a {action} the alias belongs to the claim's {holder}")

    def stored(self, seq: int) -> Change:
        """This change as the store appended it: number `seq`, alias and claim at version `seq`."""
        if type(seq) is not int or seq <= 0:
            raise ValueError(f"a stored change's seq is an int >= 1: {seq!r}")
        claim = None if self.claim is None else replace(self.claim, version=seq)
        return replace(self, seq=seq, alias=replace(self.alias, version=seq), claim=claim)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportRow:
    """The outcome of one row of a bulk import: the change to store, or why it was refused."""

    row: int
    """1-based position of the row in the import."""
    change: Change | None = None
    code: str | None = None
    field: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if (self.change is None) == (self.code is None):
            raise ValueError(f"import row {self.row} has either a change or an error code")

    @property
    def ok(self) -> bool:
        """True if the row gives a change to store."""
        return self.change is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """Every row of a bulk import, in order; nothing of it is applied yet."""

    rows: tuple[ImportRow, ...]

    @property
    def ok(self) -> bool:
        """True if every row gives a change."""
        return all(r.ok for r in self.rows)

    @property
    def changes(self) -> list[Change]:
        """The changes of the accepted rows, in row order, to store."""
        return [r.change for r in self.rows if r.change is not None]

    @property
    def errors(self) -> list[ImportRow]:
        """The refused rows."""
        return [r for r in self.rows if not r.ok]


class Directory:
    """The alias directory in memory: reads, pure decisions, and `apply` of stored changes."""

    __slots__ = ("_aliases", "_claims", "_claims_of", "_last_seq", "_open", "_owned")

    def __init__(self, aliases: Iterable[Alias] = (), claims: Iterable[Claim] = ()) -> None:
        self._aliases: dict[AliasKey, Alias] = {}
        self._claims: dict[str, Claim] = {}
        self._open: dict[AliasKey, str] = {}
        self._owned: dict[str, set[AliasKey]] = {}
        self._claims_of: dict[str, set[str]] = {}
        self._last_seq = 0
        for alias in aliases:
            if alias.key in self._aliases:
                raise ValueError(f"{alias.kind} {alias.value} is listed twice")
            self._put_alias(alias)
        for claim in claims:
            if claim.id in self._claims:
                raise ValueError(f"claim {claim.id} is listed twice")
            if claim.is_open and claim.key in self._open:
                raise ValueError(f"two open claims on {claim.kind} {claim.value}")
            self._put_claim(claim)

    # --- read side --------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of aliases registered (any status but deleted)."""
        return sum(len(keys) for keys in self._owned.values())

    @property
    def last_seq(self) -> int:
        """The highest change number or version the directory has seen (0 if none)."""
        return self._last_seq

    def get(self, kind: AliasType | str, value: str) -> Alias | None:
        """The alias of any status, deleted included; None if absent or the value is malformed."""
        if isinstance(kind, AliasType):
            # A value as it is held is canonical, and normalising it would give it back
            # (normalize is idempotent): a hit needs no normalising.
            held = self._aliases.get((kind, value))
            if held is not None:
                return held
        key = self._try_key(kind, value)
        return None if key is None else self._aliases.get(key)

    def resolve(self, kind: AliasType | str, value: str) -> Alias | None:
        """The alias if it is active (what routing pays to); None otherwise."""
        alias = self.get(kind, value)
        return alias if alias is not None and alias.active else None

    def owned_by(self, participant: str) -> list[Alias]:
        """The participant's aliases, active and inactive, sorted by kind and value."""
        try:
            participant = check_participant(participant)
        except DirectoryError:
            return []
        return [self._aliases[key] for key in sorted(self._owned.get(participant, ()))]

    def claims_for(self, participant: str) -> list[Claim]:
        """Every claim, of any state, the participant is claimant or owner of; oldest first."""
        try:
            participant = check_participant(participant)
        except DirectoryError:
            return []
        claims = (self._claims[i] for i in self._claims_of.get(participant, ()))
        return sorted(claims, key=lambda c: (c.opened_at, c.id))

    def get_claim(self, claim_id: str) -> Claim | None:
        """The claim with id `claim_id`, in any state."""
        return self._claims.get(claim_id)

    def open_claim(self, kind: AliasType | str, value: str) -> Claim | None:
        """The open claim on the alias, if there is one."""
        key = self._try_key(kind, value)
        claim_id = None if key is None else self._open.get(key)
        return None if claim_id is None else self._claims[claim_id]

    def due_claims(self, now: datetime) -> list[Claim]:
        """Open claims whose period has run out at `now`, the earliest due first."""
        require_aware(now, "now")
        due = (c for c in map(self._claims.__getitem__, self._open.values()) if c.is_due(now))
        return sorted(due, key=lambda c: (c.expires_at, c.id))

    def iter_aliases(self) -> Iterator[Alias]:
        """Every alias held, deleted ones included (a snapshot's contents)."""
        return iter(list(self._aliases.values()))

    def iter_claims(self) -> Iterator[Claim]:
        """Every claim held, of any state."""
        return iter(list(self._claims.values()))

    # --- apply side -------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Fold a stored change in: its alias and its claim, each only if newer than held."""
        if change.seq <= 0:
            raise InternalError("only a stored change (seq >= 1) can be applied")
        self._last_seq = max(self._last_seq, change.seq)
        current = self._aliases.get(change.alias.key)
        if current is None or current.version < change.alias.version:
            self._put_alias(change.alias)
        if change.claim is not None:
            held = self._claims.get(change.claim.id)
            if held is None or held.version < change.claim.version:
                self._put_claim(change.claim)

    def commit(self, change: Change) -> Change:
        """Number `change` after the last one seen and apply it (an in-memory store)."""
        stored = change.stored(self._last_seq + 1)
        self.apply(stored)
        return stored

    def _put_alias(self, alias: Alias) -> None:
        key = alias.key
        old = self._aliases.get(key)
        if old is not None and old.status is not AliasStatus.DELETED:
            owned = self._owned[old.participant]
            owned.discard(key)
            if not owned:
                del self._owned[old.participant]
        self._aliases[key] = alias
        if alias.status is not AliasStatus.DELETED:
            self._owned.setdefault(alias.participant, set()).add(key)
        self._last_seq = max(self._last_seq, alias.version)

    def _put_claim(self, claim: Claim) -> None:
        self._claims[claim.id] = claim
        for party in (claim.claimant, claim.owner):
            self._claims_of.setdefault(party, set()).add(claim.id)
        held = self._open.get(claim.key)
        if claim.is_open:
            if held is None or self._claims[held].version < claim.version:
                self._open[claim.key] = claim.id
        elif held == claim.id:
            del self._open[claim.key]
        self._last_seq = max(self._last_seq, claim.version)

    # --- decisions --------------------------------------------------------------------

    def register(
        self,
        *,
        participant: str,
        kind: AliasType | str,
        value: str | None,
        account: str,
        name: str,
        at: datetime,
        actor: str | None = None,
        evp: Callable[[], str] = new_evp,
    ) -> Change:
        """Register an alias for `participant` (an EVP is generated: give no value)."""
        return self._register(
            participant=participant,
            kind=kind,
            value=value,
            account=account,
            name=name,
            at=at,
            actor=actor,
            evp=evp,
            pending={},
        )

    def update(
        self,
        *,
        participant: str,
        kind: AliasType | str,
        value: str,
        account: str | None = None,
        name: str | None = None,
        at: datetime,
        actor: str | None = None,
    ) -> Change:
        """Point the owner's alias at another account, or give it another name, or both."""
        participant = check_participant(participant)
        key = _key(kind, value)
        if account is not None:
            account = check_account(account)
        if name is not None:
            name = check_name(name.strip())
        if account is None and name is None:
            raise NoChange("give a new account, a new name or both")
        actor = self._actor(actor, participant, at)
        alias = self._owned_alias(participant, key)
        after = replace(
            alias,
            account=alias.account if account is None else account,
            name=alias.name if name is None else name,
            updated_at=at,
            version=0,
        )
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=Action.UPDATE,
            alias=after,
            claim=None,
            prior_version=alias.version,
        )

    def set_active(
        self,
        *,
        participant: str,
        kind: AliasType | str,
        value: str,
        active: bool,
        at: datetime,
        actor: str | None = None,
    ) -> Change:
        """Activate the owner's alias (it resolves again) or deactivate it (it does not)."""
        participant = check_participant(participant)
        key = _key(kind, value)
        actor = self._actor(actor, participant, at)
        alias = self._owned_alias(participant, key)
        status = AliasStatus.ACTIVE if active else AliasStatus.INACTIVE
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=Action.ACTIVATE if active else Action.DEACTIVATE,
            alias=replace(alias, status=status, updated_at=at, version=0),
            claim=None,
            prior_version=alias.version,
        )

    def delete(
        self,
        *,
        participant: str,
        kind: AliasType | str,
        value: str,
        at: datetime,
        actor: str | None = None,
    ) -> Change:
        """Delete the owner's alias: it stops resolving and anyone may register it again."""
        participant = check_participant(participant)
        key = _key(kind, value)
        actor = self._actor(actor, participant, at)
        alias = self._owned_alias(participant, key)
        if key in self._open:
            raise ClaimExists(
                f"a portability claim is open on {_show(key)}: confirm or reject it first"
            )
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=Action.DELETE,
            alias=replace(alias, status=AliasStatus.DELETED, updated_at=at, version=0),
            claim=None,
            prior_version=alias.version,
        )

    def claim(
        self,
        *,
        claimant: str,
        kind: AliasType | str,
        value: str,
        account: str,
        name: str,
        at: datetime,
        period: timedelta,
        claim_id: str,
        actor: str | None = None,
    ) -> Change:
        """Open a claim to move another participant's alias to the claimant's `account`."""
        claimant = check_participant(claimant)
        alias_type = _kind(kind)
        if alias_type is AliasType.EVP:
            raise EvpNotPortable("an EVP stays with the participant that generated it")
        key = _key(alias_type, value)
        account = check_account(account)
        name = check_name(name.strip())
        if not isinstance(period, timedelta) or period <= timedelta(0):
            raise ValueError(f"a claim period must be a positive timedelta: {period!r}")
        if not isinstance(claim_id, str) or not 1 <= len(claim_id) <= MAX_CLAIM_ID:
            raise ValueError(f"a claim id is 1 to {MAX_CLAIM_ID} characters: {claim_id!r}")
        actor = self._actor(actor, claimant, at)
        alias = self._live_alias(key)
        if alias.participant == claimant:
            raise SameOwner(f"{_show(key)} is already registered by this participant")
        if key in self._open:
            raise ClaimExists(f"a portability claim is already open on {_show(key)}")
        if claim_id in self._claims:
            raise AlreadyRegistered(f"claim id {claim_id!r} is already used", field="claim")
        claim = Claim(
            id=claim_id,
            kind=alias.kind,
            value=alias.value,
            claimant=claimant,
            owner=alias.participant,
            account=account,
            name=name,
            state=ClaimState.OPEN,
            opened_at=at,
            expires_at=at + period,
            closed_at=None,
            version=0,
        )
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=Action.CLAIM,
            alias=replace(alias, version=0),
            claim=claim,
            prior_version=alias.version,
        )

    def confirm(
        self, *, owner: str, claim_id: str, at: datetime, actor: str | None = None
    ) -> Change:
        """The owner agrees to a claim: the alias moves to the claimant now."""
        claim, alias, actor = self._answer(owner, "owner", claim_id, at, actor)
        return self._close(claim, alias, ClaimEvent.CONFIRM, Action.CONFIRM, at, actor)

    def reject(
        self, *, owner: str, claim_id: str, at: datetime, actor: str | None = None
    ) -> Change:
        """The owner refuses a claim: the alias stays."""
        claim, alias, actor = self._answer(owner, "owner", claim_id, at, actor)
        return self._close(claim, alias, ClaimEvent.REJECT, Action.REJECT, at, actor)

    def cancel(
        self, *, claimant: str, claim_id: str, at: datetime, actor: str | None = None
    ) -> Change:
        """The claimant withdraws its claim: the alias stays."""
        claim, alias, actor = self._answer(claimant, "claimant", claim_id, at, actor)
        return self._close(claim, alias, ClaimEvent.CANCEL, Action.CANCEL, at, actor)

    def expire(self, *, claim_id: str, at: datetime, actor: str = SYSTEM_ACTOR) -> Change:
        """Complete a claim whose period ran out unanswered: the alias moves to the claimant."""
        require_aware(at, "at")
        actor = _check_actor(actor)
        claim = self._claim(claim_id)
        if not claim.is_open:
            raise ClaimNotOpen(f"claim {claim_id} is already {claim.state}")
        if not claim.is_due(at):
            raise ClaimNotDue(f"claim {claim_id} runs until {claim.expires_at.isoformat()}")
        alias = self._claimed_alias(claim)
        return self._close(claim, alias, ClaimEvent.EXPIRE, Action.COMPLETE, at, actor)

    def import_rows(
        self,
        rows: Iterable[Mapping[str, str]],
        *,
        at: datetime,
        actor: str,
        evp: Callable[[], str] = new_evp,
    ) -> ImportReport:
        """Decide an operator's bulk registration row by row; applies nothing."""
        require_aware(at, "at")
        actor = _check_actor(actor)
        pending: dict[AliasKey, int] = {}
        out: list[ImportRow] = []
        for number, row in enumerate(rows, start=1):
            try:
                value = _row_field(row, "value") or None
                change = self._register(
                    participant=_row_field(row, "participant"),
                    kind=_row_field(row, "type"),
                    value=value,
                    account=_row_field(row, "account"),
                    name=_row_field(row, "name"),
                    at=at,
                    actor=actor,
                    evp=evp,
                    pending=pending,
                )
            except DirectoryError as e:
                out.append(ImportRow(row=number, code=e.code, field=e.field, message=e.message))
            else:
                pending[change.alias.key] = number
                out.append(ImportRow(row=number, change=change))
        return ImportReport(rows=tuple(out))

    # --- helpers of the decisions -----------------------------------------------------

    def _register(
        self,
        *,
        participant: str,
        kind: AliasType | str,
        value: str | None,
        account: str,
        name: str,
        at: datetime,
        actor: str | None,
        evp: Callable[[], str],
        pending: Mapping[AliasKey, int],
    ) -> Change:
        participant = check_participant(participant)
        alias_type = _kind(kind)
        key: AliasKey | None = None
        if alias_type is AliasType.EVP:
            if value is not None:
                raise InvalidAlias("an EVP is generated by the directory: give no value")
        elif value is None or not value.strip():
            raise InvalidAlias(f"a {alias_type} alias needs a value")
        else:
            key = _key(alias_type, value)
        account = check_account(account)
        name = check_name(name.strip() if isinstance(name, str) else name)
        actor = self._actor(actor, participant, at)
        if key is None:
            key = self._fresh_evp(evp, pending)
        existing = self._aliases.get(key)
        if key in pending:
            raise AlreadyRegistered(
                f"{_show(key)} is already registered by row {pending[key]} of this import"
            )
        if existing is not None and existing.status is not AliasStatus.DELETED:
            if existing.participant == participant:
                raise AlreadyRegistered(
                    f"{_show(key)} is already registered by this participant ({existing.status})"
                )
            raise AlreadyRegistered(f"{_show(key)} is already registered by another participant")
        alias = Alias(
            kind=key[0],
            value=key[1],
            participant=participant,
            account=account,
            name=name,
            status=AliasStatus.ACTIVE,
            version=0,
            created_at=at,
            updated_at=at,
        )
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=Action.REGISTER,
            alias=alias,
            claim=None,
            prior_version=0 if existing is None else existing.version,
        )

    def _fresh_evp(self, evp: Callable[[], str], pending: Mapping[AliasKey, int]) -> AliasKey:
        for _ in range(_EVP_ATTEMPTS):
            generated = evp()
            try:
                key = (AliasType.EVP, normalize(AliasType.EVP, generated))
            except DirectoryError:
                raise InternalError(f"the EVP source gave a malformed key: {generated!r}") from None
            if key not in self._aliases and key not in pending:
                return key
        raise InternalError(f"the EVP source gave {_EVP_ATTEMPTS} keys in a row already in use")

    @staticmethod
    def _actor(actor: str | None, participant: str, at: datetime) -> str:
        require_aware(at, "at")
        return participant if actor is None else _check_actor(actor)

    def _live_alias(self, key: AliasKey) -> Alias:
        alias = self._aliases.get(key)
        if alias is None or alias.status is AliasStatus.DELETED:
            raise NotFound(f"{_show(key)} is not registered")
        return alias

    def _owned_alias(self, participant: str, key: AliasKey) -> Alias:
        alias = self._live_alias(key)
        if alias.participant != participant:
            raise NotOwner(f"{_show(key)} is registered by another participant")
        return alias

    def _claim(self, claim_id: str) -> Claim:
        claim = self._claims.get(claim_id)
        if claim is None:
            raise NotFound(f"there is no claim {claim_id!r}", field="claim")
        return claim

    def _claimed_alias(self, claim: Claim) -> Alias:
        alias = self._aliases.get(claim.key)
        if alias is None or alias.status is AliasStatus.DELETED:
            raise InternalError(f"open claim {claim.id} on {_show(claim.key)}, which is gone")
        return alias

    def _answer(
        self,
        participant: str,
        party: Literal["owner", "claimant"],
        claim_id: str,
        at: datetime,
        actor: str | None,
    ) -> tuple[Claim, Alias, str]:
        """The open, not yet due claim `participant` may answer as `party`, and its alias."""
        participant = check_participant(participant)
        actor = self._actor(actor, participant, at)
        claim = self._claim(claim_id)
        if (claim.owner if party == "owner" else claim.claimant) != participant:
            raise NotOwner(f"only the {party} of claim {claim_id} can do that")
        if not claim.is_open:
            raise ClaimNotOpen(f"claim {claim_id} is already {claim.state}")
        if claim.is_due(at):
            raise ClaimNotOpen(
                f"the period of claim {claim_id} ran out at {claim.expires_at.isoformat()}: "
                "it completes"
            )
        alias = self._claimed_alias(claim)
        if alias.participant != claim.owner:
            raise NotOwner(f"{_show(claim.key)} no longer belongs to the owner of the claim")
        return claim, alias, actor

    @staticmethod
    def _close(
        claim: Claim, alias: Alias, event: ClaimEvent, action: Action, at: datetime, actor: str
    ) -> Change:
        closed = claim.step(event, at)
        if closed.state in MOVES_ALIAS:
            after = replace(
                alias,
                participant=claim.claimant,
                account=claim.account,
                name=claim.name,
                status=AliasStatus.ACTIVE,
                updated_at=at,
                version=0,
            )
        else:
            after = replace(alias, version=0)
        return Change(
            seq=0,
            at=at,
            actor=actor,
            action=action,
            alias=after,
            claim=closed,
            prior_version=alias.version,
        )

    def _try_key(self, kind: AliasType | str, value: str) -> AliasKey | None:
        try:
            return _key(kind, value)
        except DirectoryError:
            return None


def _kind(kind: AliasType | str) -> AliasType:
    return kind if isinstance(kind, AliasType) else parse_alias_type(kind)


def _key(kind: AliasType | str, value: str) -> AliasKey:
    alias_type = _kind(kind)
    return (alias_type, normalize(alias_type, value))


def _show(key: AliasKey) -> str:
    return f"{key[0]} {key[1]}"


_ROW_ERRORS: Final[Mapping[str, Callable[[str], DirectoryError]]] = {
    "participant": InvalidParticipant,
    "type": lambda m: InvalidAlias(m, field="type"),
    "value": InvalidAlias,
    "account": InvalidAccount,
    "name": InvalidName,
}


def _row_field(row: Mapping[str, str], column: str) -> str:
    """The row's text under `column`, stripped; "" for a missing value, an error otherwise."""
    text = row.get(column)
    if text is None:
        if column == "value":
            return ""
        raise _ROW_ERRORS[column](f"the row has no {column}")
    if not isinstance(text, str):
        raise _ROW_ERRORS[column](f"the {column} must be text, not {type(text).__name__}")
    return text.strip()


# --- import files -------------------------------------------------------------------------


def parse_import(
    data: bytes, fmt: Literal["csv", "json"], *, max_rows: int = MAX_IMPORT_ROWS
) -> list[dict[str, str]]:
    """The rows of an operator's import file; InvalidFile saying which row and field is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidFile(f"the file is not UTF-8 text (byte offset {e.start})") from None
    if fmt == "csv":
        return _parse_csv(text, max_rows)
    if fmt == "json":
        return _parse_json(text, max_rows)
    raise ValueError(f"unknown import format {fmt!r}: csv or json")


def _parse_csv(text: str, max_rows: int) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict[str, str]] = []
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            raise InvalidFile(f"the file is empty: a header row {','.join(IMPORT_COLUMNS)} first")
        columns = [c.strip().lower() for c in header]
        _check_columns(columns, "the header")
        for record in reader:
            if not record:
                continue
            number = len(rows) + 1
            if number > max_rows:
                raise InvalidFile(f"the file has more than {max_rows} rows")
            if len(record) != len(columns):
                raise InvalidFile(
                    f"row {number} (line {reader.line_num}) has {len(record)} fields, "
                    f"the header {len(columns)}"
                )
            rows.append(dict(zip(columns, record, strict=True)))
    except csv.Error as e:
        raise InvalidFile(f"line {reader.line_num}: {e}") from None
    return rows


def _check_columns(columns: list[str], where: str) -> None:
    for column in columns:
        if column not in IMPORT_COLUMNS:
            raise InvalidFile(f"{where} has an unknown column {column!r}", field=column or None)
        if columns.count(column) > 1:
            raise InvalidFile(f"{where} has the column {column!r} twice", field=column)
    missing = [c for c in IMPORT_COLUMNS if c not in columns]
    if missing:
        raise InvalidFile(f"{where} lacks the column(s) {', '.join(missing)}", field=missing[0])


def _parse_json(text: str, max_rows: int) -> list[dict[str, str]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidFile(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InvalidFile("the JSON is nested too deeply") from None
    if not isinstance(document, list):
        raise InvalidFile(f"a JSON import is an array of objects, not {_json_type(document)}")
    if len(document) > max_rows:
        raise InvalidFile(f"the file has more than {max_rows} rows")
    rows: list[dict[str, str]] = []
    for number, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            raise InvalidFile(f"row {number} is {_json_type(item)}, not an object")
        for key in item:
            if key not in IMPORT_COLUMNS:
                raise InvalidFile(f"row {number} has an unknown key {key!r}", field=key)
        row: dict[str, str] = {}
        for column in IMPORT_COLUMNS:
            field_value = item.get(column)
            if field_value is None and column == "value":
                field_value = ""
            if field_value is None:
                raise InvalidFile(f"row {number} lacks {column!r}", field=column)
            if not isinstance(field_value, str):
                raise InvalidFile(
                    f"row {number}: {column!r} must be a string, not {_json_type(field_value)}",
                    field=column,
                )
            row[column] = field_value
        rows.append(row)
    return rows


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"
