"""Operating the switch: operator roles and tokens, operator commands, maker-checker,
alerts. Pure decisions; the operator API (`switch.api.operators`) and the engine drive
them.
"""

from switch.operations.access import (
    TOKEN_PREFIX,
    IssuedToken,
    Role,
    allows,
    issue_token,
    parse_token,
    secret_matches,
    secret_sha256,
)
from switch.operations.alerts import (
    Alert,
    AlertBook,
    AlertLimits,
    Observation,
    ParticipantState,
    Severity,
)
from switch.operations.approvals import check_decision, needs_approval
from switch.operations.commands import (
    ACTIONS,
    Action,
    Decision,
    OperatorCommand,
    Refused,
    cannot_defund,
    decide,
    participant_view,
)

__all__ = [
    "ACTIONS",
    "TOKEN_PREFIX",
    "Action",
    "Alert",
    "AlertBook",
    "AlertLimits",
    "Decision",
    "IssuedToken",
    "Observation",
    "OperatorCommand",
    "ParticipantState",
    "Refused",
    "Role",
    "Severity",
    "allows",
    "cannot_defund",
    "check_decision",
    "decide",
    "issue_token",
    "needs_approval",
    "parse_token",
    "participant_view",
    "secret_matches",
    "secret_sha256",
]
