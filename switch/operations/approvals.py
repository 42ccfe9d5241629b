"""Maker-checker for moving money: which funding requests need a second operator.

Funding or defunding more than `[operations] approval_threshold` is not done when asked:
it becomes a pending approval, and a second operator (a different operator name, with the
operator role or above) approves it, which carries it out, or rejects it. An approval
not decided within `approval_ttl_seconds` expires and can no longer be carried out.
"""

from __future__ import annotations

from datetime import datetime

from switch.operations.commands import Refused

__all__ = ["check_decision", "needs_approval"]


def needs_approval(amount: int, threshold: int | None) -> bool:
    """True if moving `amount` needs a second operator (None: never)."""
    return threshold is not None and amount > threshold


def check_decision(
    *,
    approval: str,
    state: str,
    maker: str,
    expires_at: datetime,
    checker: str,
    now: datetime,
) -> None:
    """Refused unless `checker` may decide pending approval `approval` at `now`."""
    if state != "pending":
        raise Refused(409, "approval_not_pending", f"approval {approval} is already {state}")
    if now >= expires_at:
        raise Refused(
            409, "approval_expired", f"approval {approval} expired at {expires_at.isoformat()}"
        )
    if checker == maker:
        raise Refused(
            403,
            "same_operator",
            f"approval {approval} was requested by {maker}; a second operator must decide it",
        )
