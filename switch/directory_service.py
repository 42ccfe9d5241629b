"""The alias directory as a service: the pure directory's decisions, through the store.

Theory of operation. `switch.directory` decides (who may register, update, claim, what a
lookup returns) on an in-memory `Directory`; the store keeps the directory's history,
one appended change per step, numbered by `seq`. A `DirectoryService` is one process's
view of it: it loads the directory once, then follows the history. Every write goes
through `Store.directory_write`, which holds the directory's write lock, hands over the
changes other processes stored since this one last looked, and stores what the decision
returns, so two processes (the engine's and an API's, or two switch instances) can never
decide on a stale directory: a registration is checked against every change committed
before it, and the engine sees a change at its very next payment (`refresh`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from switch.directory import (
    Alias,
    AliasType,
    Change,
    Claim,
    Directory,
    ImportReport,
    new_evp,
)
from switch.store.base import Store

log = logging.getLogger("rtpswitch.directory")

Decision = Callable[[Directory], Sequence[Change]]
"""Given the directory as of now, the changes to store (raises DirectoryError to refuse)."""


class DirectoryService:
    """One process's view of the alias directory, and the way it changes it."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        claim_period: timedelta,
        claim_ids: Callable[[], str],
        evp: Callable[[], str] = new_evp,
    ) -> None:
        self.store = store
        self.clock = clock
        self.claim_period = claim_period
        self.claim_ids = claim_ids
        self.evp = evp
        self.directory = Directory()
        self.seq = 0
        """The last stored change this view has applied."""
        self.notified = 0
        """As loaded: the last change the participants had been told about."""
        self._fresh: list[Change] = []

    async def start(self) -> None:
        """Load the directory from the store."""
        snapshot = await self.store.directory_load()
        directory = Directory()
        for change in snapshot.changes:
            directory.apply(change)
        self.directory, self.seq, self.notified = directory, snapshot.seq, snapshot.notified
        self._fresh = []

    async def refresh(self) -> list[Change]:
        """Catch up with the store; return every change applied since the last refresh.

        That is the changes other processes stored and those this view stored itself,
        in seq order (the engine tells the banks about the claim steps among them).
        """
        return self.catch_up(await self.changes_since())

    async def changes_since(self) -> list[Change]:
        """The changes stored after those this view has applied (nothing is applied)."""
        return await self.store.directory_changes(self.seq)

    def catch_up(self, changes: Iterable[Change]) -> list[Change]:
        """Apply `changes` (as `changes_since` read them, perhaps a while ago; those
        already applied are skipped) and return every change applied since the last
        refresh, as `refresh` does."""
        self._apply(changes)
        fresh, self._fresh = self._fresh, []
        return fresh

    def _apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.seq > self.seq:
                self.directory.apply(change)
                self.seq = change.seq
                self._fresh.append(change)

    async def write(self, decision: Decision) -> list[Change]:
        """Decide on the current directory and store the result, atomically."""

        def decide(seen: Sequence[Change]) -> Sequence[Change]:
            self._apply(seen)
            return decision(self.directory)

        _, stored = await self.store.directory_write(self.seq, decide)
        self._apply(stored)
        return stored

    async def _one(self, decision: Callable[[Directory], Change]) -> Change:
        """`write` of a decision that makes exactly one change."""
        (change,) = await self.write(lambda d: [decision(d)])
        return change

    # --- what participants do ----------------------------------------------------------

    async def register(
        self,
        *,
        participant: str,
        kind: AliasType,
        value: str | None,
        account: str,
        name: str,
        actor: str | None = None,
    ) -> Alias:
        """Register an alias for `participant` (EVP: `value` None, the directory makes it)."""
        at = self.clock()
        change = await self._one(
            lambda d: d.register(
                participant=participant,
                kind=kind,
                value=value,
                account=account,
                name=name,
                at=at,
                actor=actor,
                evp=self.evp,
            )
        )
        return change.alias

    async def update(
        self,
        *,
        participant: str,
        kind: AliasType,
        value: str,
        account: str | None = None,
        name: str | None = None,
    ) -> Alias:
        """Point the owner's alias at another account and/or display name."""
        at = self.clock()
        change = await self._one(
            lambda d: d.update(
                participant=participant,
                kind=kind,
                value=value,
                account=account,
                name=name,
                at=at,
            )
        )
        return change.alias

    async def set_active(
        self, *, participant: str, kind: AliasType, value: str, active: bool
    ) -> Alias:
        """Activate or deactivate the owner's alias (an inactive alias is not paid: BE23)."""
        at = self.clock()
        change = await self._one(
            lambda d: d.set_active(
                participant=participant, kind=kind, value=value, active=active, at=at
            )
        )
        return change.alias

    async def delete(self, *, participant: str, kind: AliasType, value: str) -> Alias:
        """Delete the owner's alias (kept in the history; the value is free again)."""
        at = self.clock()
        change = await self._one(
            lambda d: d.delete(participant=participant, kind=kind, value=value, at=at)
        )
        return change.alias

    async def claim(
        self, *, claimant: str, kind: AliasType, value: str, account: str, name: str
    ) -> Claim:
        """Open a portability claim on an alias another participant owns."""
        at = self.clock()
        claim_id = self.claim_ids()
        change = await self._one(
            lambda d: d.claim(
                claimant=claimant,
                kind=kind,
                value=value,
                account=account,
                name=name,
                at=at,
                period=self.claim_period,
                claim_id=claim_id,
            )
        )
        assert change.claim is not None
        return change.claim

    async def answer_claim(self, *, owner: str, claim_id: str, confirm: bool) -> Claim:
        """The current owner confirms (the alias moves) or rejects a claim."""
        at = self.clock()
        if confirm:
            change = await self._one(lambda d: d.confirm(owner=owner, claim_id=claim_id, at=at))
        else:
            change = await self._one(lambda d: d.reject(owner=owner, claim_id=claim_id, at=at))
        assert change.claim is not None
        return change.claim

    async def cancel_claim(self, *, claimant: str, claim_id: str) -> Claim:
        """The claimant withdraws its open claim."""
        at = self.clock()
        change = await self._one(lambda d: d.cancel(claimant=claimant, claim_id=claim_id, at=at))
        assert change.claim is not None
        return change.claim

    # --- what the scheme does ----------------------------------------------------------

    async def expire_due(self) -> list[Change]:
        """Complete every open claim whose period ran out unanswered (the alias moves)."""
        at = self.clock()
        if not self.directory.due_claims(at):
            return []
        changes = await self.write(
            lambda d: [d.expire(claim_id=c.id, at=at) for c in d.due_claims(at)]
        )
        for change in changes:
            log.info("claim %s completed unanswered: alias moved", change.claim and change.claim.id)
        return changes

    async def import_rows(self, rows: Iterable[Mapping[str, str]], *, actor: str) -> ImportReport:
        """Bulk onboarding by an operator: store every row that is right, report each row."""
        at = self.clock()
        report: list[ImportReport] = []

        def decide(d: Directory) -> Sequence[Change]:
            result = d.import_rows(rows, at=at, actor=actor, evp=self.evp)
            report.append(result)
            return result.changes

        await self.write(decide)
        return report[-1]
