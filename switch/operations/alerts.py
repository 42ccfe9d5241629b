"""Alerts an operator must see, derived from one observation of the switch: no I/O.

Each rule looks at an `Observation` (what the operator API gathered from the engine,
the store and the transport at one instant) and raises an `Alert` with a stable `code`,
a severity and a sentence saying what is wrong and about whom. `AlertBook` remembers
since when each alert has been standing (the first observation that raised it), and
forgets an alert as soon as an observation no longer raises it, so `since` tells an
operator how long a condition has lasted and a cleared one comes back with a new time.

==========================  ==========  ==============================================
code                        severity    raised when
==========================  ==========  ==============================================
engine_stopped              critical    the clearing engine is not running
conservation_broken         critical    positions do not add up to funded - defunded
position_exhausted          critical    a participant's available position is zero
low_position                warning     available is under `low_position`
participant_suspended       warning     the operator suspended a participant
participant_signed_off      warning     a participant signed off (admi.004 SGOF)
participant_disconnected    warning     an active participant has no consumer on its queue
high_reject_rate            warning     over the last minute, rejects/final >= the limit
                                        (with at least `min_sample` final payments)
timeouts                    warning     over the last minute, timed out/final >= limit
queue_backlog               warning     more than `queue_depth` messages wait for the switch
approvals_pending           info        funding requests wait for a second operator
==========================  ==========  ==============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from switch.core import Participant, ParticipantStatus, format_minor
from switch.ledger import Position

__all__ = ["Alert", "AlertBook", "AlertLimits", "Observation", "ParticipantState", "Severity"]


class Severity(StrEnum):
    """How urgent an alert is."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A standing condition an operator must see."""

    code: str
    severity: Severity
    participant: str | None
    message: str
    since: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertLimits:
    """Where the rules draw their lines (the `[operations]` settings)."""

    low_position: int
    """Minor units: an available position under this is low."""
    reject_rate: float = 0.25
    timeout_rate: float = 0.05
    min_sample: int = 20
    queue_depth: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantState:
    """One participant as observed."""

    participant: Participant
    position: Position
    connected: bool | None
    """None when the transport cannot tell."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """The switch at one instant, as the alert rules need it."""

    at: datetime
    engine_running: bool
    conservation_ok: bool
    discrepancy: int
    participants: Sequence[ParticipantState]
    finals_last_minute: int
    rejected_last_minute: int
    timed_out_last_minute: int
    queue_depth: int | None
    pending_approvals: int
    exponent: int = 2


def _raised(o: Observation, limits: AlertLimits) -> list[tuple[str, Severity, str | None, str]]:
    out: list[tuple[str, Severity, str | None, str]] = []
    if not o.engine_running:
        out.append(("engine_stopped", Severity.CRITICAL, None, "the clearing engine is stopped"))
    if not o.conservation_ok:
        text = (
            f"positions differ from funded - defunded by {format_minor(o.discrepancy, o.exponent)}"
        )
        out.append(("conservation_broken", Severity.CRITICAL, None, text))
    for ps in o.participants:
        p, available = ps.participant, ps.position.available
        if available == 0:
            out.append(
                ("position_exhausted", Severity.CRITICAL, p.id, f"{p.id} has nothing available")
            )
        elif available < limits.low_position:
            text = (
                f"{p.id} has {format_minor(available, o.exponent)} available, under "
                f"{format_minor(limits.low_position, o.exponent)}"
            )
            out.append(("low_position", Severity.WARNING, p.id, text))
        if p.status is ParticipantStatus.SUSPENDED:
            text = f"{p.id} is suspended: its payments are rejected"
            out.append(("participant_suspended", Severity.WARNING, p.id, text))
        elif p.status is ParticipantStatus.SIGNED_OFF:
            text = f"{p.id} is signed off: payments to it are rejected AB08"
            out.append(("participant_signed_off", Severity.WARNING, p.id, text))
        elif ps.connected is False:
            text = f"{p.id} is active but not connected to its queue"
            out.append(("participant_disconnected", Severity.WARNING, p.id, text))
    finals = o.finals_last_minute
    if finals >= limits.min_sample:
        rate = o.rejected_last_minute / finals
        if rate >= limits.reject_rate:
            text = f"{rate:.0%} of the last minute's {finals} final payments were rejected"
            out.append(("high_reject_rate", Severity.WARNING, None, text))
        rate = o.timed_out_last_minute / finals
        if rate >= limits.timeout_rate:
            text = f"{rate:.0%} of the last minute's {finals} final payments timed out"
            out.append(("timeouts", Severity.WARNING, None, text))
    if o.queue_depth is not None and o.queue_depth > limits.queue_depth:
        text = f"{o.queue_depth} messages wait for the switch"
        out.append(("queue_backlog", Severity.WARNING, None, text))
    if o.pending_approvals:
        text = f"{o.pending_approvals} funding request(s) wait for a second operator"
        out.append(("approvals_pending", Severity.INFO, None, text))
    return out


_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(slots=True)
class AlertBook:
    """The standing alerts, with the time each was first raised."""

    limits: AlertLimits
    _since: dict[tuple[str, str | None], datetime] = field(default_factory=dict)

    def evaluate(self, o: Observation) -> list[Alert]:
        """The alerts `o` raises, most severe first; remembers since when each stands."""
        raised = _raised(o, self.limits)
        keys = {(code, participant) for code, _, participant, _ in raised}
        for key in [k for k in self._since if k not in keys]:
            del self._since[key]
        alerts = []
        for code, severity, participant, message in raised:
            since = self._since.setdefault((code, participant), o.at)
            alerts.append(
                Alert(
                    code=code,
                    severity=severity,
                    participant=participant,
                    message=message,
                    since=since,
                )
            )
        alerts.sort(key=lambda a: (_ORDER[a.severity], a.since, a.code, a.participant or ""))
        return alerts
