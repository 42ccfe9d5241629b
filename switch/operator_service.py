"""The operators' view of a running switch: what the operator API reads and changes.

Theory of operation. The service sits beside a running `Engine` (in `rtpswitch run`'s
leader, or in `rtpswitch demo --serve`) and joins three sources: the engine's memory
(positions, participant statuses, counters: always current), the store (payments,
messages, journal, audit log, tokens, approvals: the system of record) and the
transport (queue depth, which banks are connected). It never writes positions or
participants itself: those changes are `OperatorCommand`s the engine decides in its loop
and commits with their audit record (`Engine.operate`). Tokens and approvals, which the
engine does not hold, are written to the store with their audit record in one
transaction.

Maker-checker: a fund or defund above `[operations] approval_threshold` is stored as a
pending approval; a second operator's approval hands the command to the engine, which
commits the money movement, the approval's decision and the audit record together, so
an approval is carried out exactly once or not at all.

A sampler takes the engine's counters once a second; the dashboard's throughput and
reject-rate series, and the last-minute rates the alert rules need, are differences
between samples (ten minutes are kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

from switch.core import Participant, PaymentState, format_minor, to_minor
from switch.engine import Engine
from switch.iso20022.reasons import REASONS
from switch.ledger import Position
from switch.operations import (
    Action,
    Alert,
    AlertBook,
    AlertLimits,
    Decision,
    Observation,
    OperatorCommand,
    ParticipantState,
    Refused,
    Role,
    allows,
    cannot_defund,
    check_decision,
    issue_token,
    needs_approval,
    parse_token,
    participant_view,
    secret_matches,
)
from switch.operations.trail import Transition, transitions
from switch.store.base import (
    Approval,
    ApprovalDecision,
    ApprovalState,
    ArchivedMessage,
    AuditRecord,
    OperatorToken,
    PaymentQuery,
    PaymentRecord,
    Store,
)
from switch.transport import Observable

__all__ = [
    "Operator",
    "OperatorService",
    "PaymentTrail",
    "Sample",
    "alert_view",
    "audit_record",
    "create_token",
    "token_view",
]

log = logging.getLogger("rtpswitch.operations")

SAMPLE_EVERY: Final = 1.0
"""Seconds between samples of the engine's counters."""
SAMPLES_KEPT: Final = 601
"""Ten minutes of samples (600 intervals)."""
RECENT_REJECTS: Final = 20
COMMAND_LINE: Final = "command-line"
"""The actor the audit log names for what was done with `rtpswitch operator` on the host."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """Who is calling: the token's id, its operator's name and role."""

    token: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The engine's counters at one instant."""

    at: datetime
    monotonic: float
    payments: int
    settled: int
    rejected: int
    timed_out: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentTrail:
    """One payment with its messages and its path through the lifecycle."""

    payment: PaymentRecord
    messages: Sequence[ArchivedMessage]
    transitions: Sequence[Transition]


def utcnow() -> datetime:
    return datetime.now(UTC)


class OperatorService:
    """What the operator API does, on a running engine, its store and its transport."""

    def __init__(
        self,
        engine: Engine,
        *,
        store: Store | None = None,
        transport: object | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store or engine.store
        self.transport = transport if transport is not None else engine.transport
        self.settings = engine.settings
        self.exponent = engine.settings.scheme.exponent
        self.currency = engine.settings.scheme.currency
        self.clock = clock
        self.monotonic = monotonic
        ops = engine.settings.operations
        self.threshold = (
            None
            if ops.approval_threshold is None
            else to_minor(ops.approval_threshold, self.exponent)
        )
        self.low_position = to_minor(ops.low_position, self.exponent)
        self.alerts = AlertBook(
            AlertLimits(
                low_position=self.low_position,
                reject_rate=ops.reject_rate_alert,
                timeout_rate=ops.timeout_rate_alert,
                queue_depth=ops.queue_depth_alert,
            )
        )
        self.samples: deque[Sample] = deque(maxlen=SAMPLES_KEPT)
        self.started = monotonic()
        self._sampler: asyncio.Task[None] | None = None
        self._approving = asyncio.Lock()

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sampling the engine's counters."""
        self.sample()
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_forever(), name="operator-sampler")

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            self.sample()

    def sample(self) -> Sample:
        """Take the engine's counters now."""
        s = self.engine.stats
        sample = Sample(
            at=self.clock(),
            monotonic=self.monotonic(),
            payments=s.payments,
            settled=s.settled,
            rejected=s.rejected,
            timed_out=s.timed_out,
        )
        self.samples.append(sample)
        return sample

    # --- who is calling -------------------------------------------------------------------

    async def authenticate(self, text: str | None) -> Operator:
        """The operator a bearer token belongs to; Refused 401 if it is not a live token."""
        if not text:
            raise Refused(401, "token_required", "send an operator token: Authorization: Bearer")
        parsed = parse_token(text)
        found = None if parsed is None else await self.store.token_get(parsed[0])
        if parsed is None or found is None or not secret_matches(parsed[1], found[1]):
            raise Refused(401, "invalid_token", "the operator token is not valid")
        token = found[0]
        if token.revoked_at is not None:
            raise Refused(401, "token_revoked", f"operator token {token.id} is revoked")
        return Operator(token=token.id, name=token.name, role=Role(token.role))

    @staticmethod
    def require(operator: Operator, needed: Role) -> None:
        """Refused 403 unless the operator's role has the rights of `needed`."""
        if not allows(operator.role, needed):
            raise Refused(
                403,
                "forbidden",
                f"{operator.name} is {operator.role}; this needs the {needed} role",
            )

    # --- tokens ---------------------------------------------------------------------------

    async def create_token(
        self, name: str, role: Role, by: Operator | None
    ) -> tuple[OperatorToken, str]:
        """A new token (and its text, shown once); `by` None: made from the command line."""
        return await create_token(self.store, name, role, by, self.clock())

    async def revoke_token(self, token_id: str, by: Operator) -> OperatorToken:
        """Revoke a token (at once: the next request with it is refused)."""
        found = await self.store.token_get(token_id)
        if found is None:
            raise Refused(404, "unknown_token", f"there is no operator token {token_id}")
        now = self.clock()
        before = token_view(found[0])
        after = before | {"revoked_at": now.isoformat(), "revoked_by": by.name}
        audit = self._audit(by, "token.revoke", token_id, before, after, now)
        token = await self.store.token_revoke(token_id, at=now, by=by.name, audit=audit)
        if token is None:
            raise Refused(404, "unknown_token", f"there is no operator token {token_id}")
        return token

    # --- participants and positions -------------------------------------------------------

    def participants(self) -> list[Participant]:
        """Every participant as the engine holds it, by id."""
        directory = self.engine.ctx.directory
        return [directory[pid] for pid in sorted(directory)]

    def participant(self, participant_id: str) -> Participant:
        """One participant (Refused 404 if unknown)."""
        try:
            return self.engine.ctx.directory[participant_id]
        except KeyError:
            raise Refused(
                404,
                "unknown_participant",
                f"{participant_id} is not a participant of the scheme",
                field="participant",
            ) from None

    def position(self, participant_id: str) -> Position:
        """A participant's position now (in the engine's memory)."""
        return self.engine.book.position(participant_id)

    async def connectivity(self, ids: Collection[str]) -> dict[str, bool | None]:
        """Whether each bank is connected (None: the transport cannot tell)."""
        if isinstance(self.transport, Observable):
            try:
                found = await self.transport.connected(ids)
            except Exception as exc:  # the monitoring view must not fail on the broker
                log.warning("cannot read connectivity: %s", exc)
                return dict.fromkeys(ids)
            return {pid: found.get(pid) for pid in ids}
        return dict.fromkeys(ids)

    async def queue_depth(self) -> int | None:
        """Messages waiting for the switch (None: the transport cannot tell)."""
        if isinstance(self.transport, Observable):
            try:
                return await self.transport.queue_depth()
            except Exception as exc:
                log.warning("cannot read the queue depth: %s", exc)
        return None

    async def operate(self, cmd: OperatorCommand) -> Decision:
        """Have the engine decide and commit `cmd` (Refused: nothing changed)."""
        return await self.engine.operate(cmd)

    async def move_money(
        self,
        action: Action,
        participant_id: str,
        amount: int,
        reference: str,
        by: Operator,
    ) -> Decision | Approval:
        """Fund or defund now (the engine decides), or, above the threshold, ask a second
        operator: then refused here, as the engine would, if it could not be done now."""
        if not needs_approval(amount, self.threshold):
            return await self.operate(
                OperatorCommand(
                    action=action,
                    participant=participant_id,
                    actor=by.name,
                    role=by.role,
                    amount=amount,
                    reference=reference,
                )
            )
        self.participant(participant_id)
        have = self.position(participant_id).available
        if action is Action.DEFUND and have < amount:
            raise cannot_defund(participant_id, have, amount, self.exponent)
        now = self.clock()
        approval = Approval(
            id=f"APR{uuid4().hex[:20]}",
            action=action.value.split(".")[1],
            participant=participant_id,
            amount=amount,
            reference=reference,
            maker=by.name,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.operations.approval_ttl),
        )
        audit = self._audit(
            by, "approval.request", participant_id, None, self.approval_view(approval), now
        )
        audit = replace(audit, approval=approval.id)
        await self.store.approval_create(approval, audit)
        return approval

    async def decide_approval(self, approval_id: str, approve: bool, by: Operator) -> Approval:
        """A second operator approves (carrying it out) or rejects a funding request."""
        async with self._approving:  # one decision at a time in this process
            approval = await self.store.approval_get(approval_id)
            if approval is None:
                raise Refused(404, "unknown_approval", f"there is no approval {approval_id}")
            now = self.clock()
            check_decision(
                approval=approval.id,
                state=str(approval.state),
                maker=approval.maker,
                expires_at=approval.expires_at,
                checker=by.name,
                now=now,
            )
            state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
            decision = ApprovalDecision(id=approval.id, state=state, checker=by.name, at=now)
            if approve:
                action = Action.FUND if approval.action == "fund" else Action.DEFUND
                await self.engine.operate(
                    OperatorCommand(
                        action=action,
                        participant=approval.participant,
                        actor=approval.maker,
                        role=str(Role.OPERATOR),
                        amount=approval.amount,
                        reference=approval.reference,
                        approval=approval.id,
                        checker=by.name,
                        checker_role=str(by.role),
                    ),
                    decision=decision,
                )
            else:
                before = self.approval_view(approval)
                after = before | {"state": str(state), "checker": by.name}
                audit = self._audit(by, "approval.reject", approval.participant, before, after, now)
                stored = await self.store.approval_decide(
                    decision, replace(audit, approval=approval.id)
                )
                if stored is None:
                    raise Refused(409, "approval_not_pending", f"approval {approval_id} is decided")
            found = await self.store.approval_get(approval_id)
            assert found is not None
            return found

    # --- payments -------------------------------------------------------------------------

    async def trail(self, key: str) -> PaymentTrail:
        """A payment (by id or UETR) with its messages and state transitions."""
        payment = await self.store.payment(key)
        if payment is None:
            raise Refused(404, "unknown_payment", f"there is no payment with id or UETR {key}")
        messages = await self.store.payment_messages(payment)
        received_at = next(
            (m.at for m in messages if m.id == payment.inbound_id), payment.created_at
        )
        forwarded_at = next(
            (
                m.at
                for m in messages
                if m.direction == "out"
                and m.msg_type.startswith("pacs.008")
                and m.participant == payment.creditor_agent
            ),
            None,
        )
        path = transitions(
            state=payment.state,
            reason=payment.reason,
            received_at=received_at,
            updated_at=payment.updated_at,
            forwarded_at=forwarded_at,
        )
        return PaymentTrail(payment=payment, messages=messages, transitions=path)

    # --- conservation, alerts, the dashboard ----------------------------------------------

    async def conservation(self) -> dict[str, Any]:
        """Conservation measured in the engine's memory and in the database."""
        memory = self.engine.book.conservation()
        stored = await self.store.conservation()
        return {
            "ok": memory.ok and stored.ok,
            "currency": self.currency,
            "memory": _conservation_view(memory, self.money),
            "database": _conservation_view(stored, self.money),
        }

    def rates(self, seconds: float = 60.0) -> tuple[int, int, int]:
        """(final payments, rejected, timed out) over the last `seconds` of samples."""
        if not self.samples:
            return 0, 0, 0
        last = self.samples[-1]
        first = last
        for s in reversed(self.samples):
            if last.monotonic - s.monotonic > seconds:
                break
            first = s
        rejected = last.rejected - first.rejected
        timed_out = last.timed_out - first.timed_out
        finals = last.settled - first.settled + rejected + timed_out
        return finals, rejected, timed_out

    async def observe(self) -> tuple[Observation, dict[str, bool | None]]:
        """One observation for the alert rules (and the connectivity read for it)."""
        participants = self.participants()
        connected = await self.connectivity([p.id for p in participants])
        memory = self.engine.book.conservation()
        finals, rejected, timed_out = self.rates()
        pending = await self.store.approvals(state=ApprovalState.PENDING, limit=1000)
        now = self.clock()
        return (
            Observation(
                at=now,
                engine_running=self.engine.running,
                conservation_ok=memory.ok,
                discrepancy=memory.discrepancy,
                participants=[
                    ParticipantState(
                        participant=p, position=self.position(p.id), connected=connected[p.id]
                    )
                    for p in participants
                ],
                finals_last_minute=finals,
                rejected_last_minute=rejected,
                timed_out_last_minute=timed_out,
                queue_depth=await self.queue_depth(),
                pending_approvals=sum(1 for a in pending if a.expires_at > now),
                exponent=self.exponent,
            ),
            connected,
        )

    async def current_alerts(self) -> list[Alert]:
        """The alerts standing now."""
        observation, _ = await self.observe()
        return self.alerts.evaluate(observation)

    def latency_ms(self) -> dict[str, float | int | None]:
        """Percentiles of the recent end-to-end latencies (payment received -> final)."""
        recent = sorted(self.engine.stats.recent_latencies)
        n = len(recent)
        if not n:
            return {"p50": None, "p90": None, "p99": None, "max": None, "count": 0}

        def pct(q: float) -> float:
            return round(recent[min(n - 1, int(q * n))] * 1000.0, 3)

        return {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": round(recent[-1] * 1000.0, 3),
            "count": n,
        }

    def series(self) -> list[dict[str, Any]]:
        """Per-second rates between consecutive samples, oldest first."""
        points = []
        samples = list(self.samples)
        for a, b in itertools.pairwise(samples):
            dt = b.monotonic - a.monotonic
            if dt <= 0:
                continue
            settled, rejected = b.settled - a.settled, b.rejected - a.rejected
            timed_out = b.timed_out - a.timed_out
            finals = settled + rejected + timed_out
            points.append(
                {
                    "at": _iso(b.at),
                    "payments_per_second": round((b.payments - a.payments) / dt, 3),
                    "settled_per_second": round(settled / dt, 3),
                    "rejected_per_second": round(rejected / dt, 3),
                    "timed_out_per_second": round(timed_out / dt, 3),
                    "reject_rate": round((rejected + timed_out) / finals, 4) if finals else 0.0,
                }
            )
        return points

    async def dashboard(self) -> dict[str, Any]:
        """Everything the dashboard shows, in one answer."""
        observation, connected = await self.observe()
        alerts = self.alerts.evaluate(observation)
        stats = self.engine.stats
        rejects = await self.recent_rejects()
        return {
            "at": _iso(observation.at),
            "currency": self.currency,
            "switch": {
                "engine_running": self.engine.running,
                "store": "postgresql" if _is_postgres(self.store) else "sqlite",
                "uptime_seconds": round(self.monotonic() - self.started, 1),
            },
            "series": self.series(),
            "totals": {
                "payments": stats.payments,
                "settled": stats.settled,
                "rejected": stats.rejected,
                "timed_out": stats.timed_out,
                "in_flight": stats.in_flight,
            },
            "latency_ms": self.latency_ms(),
            "participants": [
                {
                    "id": ps.participant.id,
                    "name": ps.participant.name,
                    "status": str(ps.participant.status),
                    "connected": connected.get(ps.participant.id),
                    "available": self.money(ps.position.available),
                    "reserved": self.money(ps.position.reserved),
                    "low_position": ps.position.available < self.low_position,
                    "low_position_threshold": self.money(self.low_position),
                }
                for ps in observation.participants
            ],
            "recent_rejects": [self.reject_view(p) for p in rejects],
            "alerts": [alert_view(a) for a in alerts],
        }

    async def recent_rejects(self, limit: int = RECENT_REJECTS) -> list[PaymentRecord]:
        """The latest payments rejected or timed out, newest first."""
        found: list[PaymentRecord] = []
        for state in (PaymentState.REJECTED, PaymentState.TIMED_OUT):
            found += await self.store.search_payments(PaymentQuery(state=state, limit=limit))
        found.sort(key=lambda p: (p.updated_at, p.id), reverse=True)
        return found[:limit]

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state: "ok", or what is wrong with it."""
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if isinstance(self.transport, Observable):
            try:
                depth = await asyncio.wait_for(self.transport.queue_depth(), 2.0)
                checks["broker"] = "ok" if depth is not None else "unreachable"
            except Exception as exc:
                checks["broker"] = f"unreachable: {type(exc).__name__}"
        else:
            checks["broker"] = "ok"
        checks["schemas"] = "ok" if self.engine.started else "not loaded"
        checks["engine"] = "ok" if self.engine.running else "stopped"
        return checks

    # --- views ----------------------------------------------------------------------------

    def money(self, minor: int) -> str:
        """Minor units as a decimal amount of the scheme currency."""
        return format_minor(minor, self.exponent)

    def participant_view(self, p: Participant) -> dict[str, Any]:
        """A participant with its position."""
        return participant_view(p, self.position(p.id), self.exponent)

    def approval_view(self, a: Approval) -> dict[str, Any]:
        """An approval as the API and the audit log show it."""
        return {
            "id": a.id,
            "action": a.action,
            "participant": a.participant,
            "amount": self.money(a.amount),
            "reference": a.reference,
            "maker": a.maker,
            "created_at": _iso(a.created_at),
            "expires_at": _iso(a.expires_at),
            "state": str(a.state),
            "checker": a.checker,
            "decided_at": None if a.decided_at is None else _iso(a.decided_at),
        }

    def reject_view(self, p: PaymentRecord) -> dict[str, Any]:
        """A rejected (or timed out) payment, for the recent rejects list."""
        return {
            "payment_id": p.id,
            "uetr": p.uetr,
            "at": _iso(p.updated_at),
            "debtor_agent": p.debtor_agent,
            "creditor_agent": p.creditor_agent,
            "amount": self.money(p.amount),
            "state": str(p.state),
            "reason": p.reason,
            "reason_text": REASONS[p.reason].name if p.reason and p.reason in REASONS else "",
        }

    def _audit(
        self,
        by: Operator | None,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        at: datetime,
    ) -> AuditRecord:
        return audit_record(by, action, target, before, after, at)


def audit_record(
    by: Operator | None,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    at: datetime,
) -> AuditRecord:
    """An audit record of something `by` did (None: the command line, on the host)."""
    return AuditRecord(
        at=at,
        actor=COMMAND_LINE if by is None else by.name,
        role=str(Role.ADMIN) if by is None else str(by.role),
        action=action,
        target=target,
        before=before,
        after=after,
    )


async def create_token(
    store: Store, name: str, role: Role, by: Operator | None, now: datetime
) -> tuple[OperatorToken, str]:
    """Issue an operator token, stored (its secret's hash) with its audit record.

    Returns the token and its text, which is shown once and never kept.
    """
    issued = issue_token()
    token = OperatorToken(
        id=issued.id,
        name=name,
        role=role,
        created_at=now,
        created_by=None if by is None else by.name,
    )
    audit = audit_record(by, "token.create", issued.id, None, token_view(token), now)
    await store.token_create(token, issued.sha256, audit)
    log.info("operator token %s (%s, %s) created", token.id, name, role)
    return token, issued.text


def alert_view(a: Alert) -> dict[str, Any]:
    """An alert as the API shows it."""
    return {
        "code": a.code,
        "severity": str(a.severity),
        "participant": a.participant,
        "message": a.message,
        "since": _iso(a.since),
    }


def token_view(t: OperatorToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "role": str(t.role),
        "created_at": _iso(t.created_at),
        "created_by": t.created_by,
        "revoked_at": None if t.revoked_at is None else _iso(t.revoked_at),
        "revoked_by": t.revoked_by,
    }


def _conservation_view(report: Any, money: Callable[[int], str]) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "available": money(report.total_available),
        "reserved": money(report.total_reserved),
        "funded": money(report.funded),
        "defunded": money(report.defunded),
        "discrepancy": money(report.discrepancy),
    }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_postgres(store: Store) -> bool:
    return type(store).__name__ == "PostgresStore"
