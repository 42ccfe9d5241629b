"""Persistence: the store interface and `open_store`, which picks the adapter by URL.

The adapters (`switch.store.postgres` on asyncpg, `switch.store.sqlite` on the stdlib
`sqlite3`) are imported only when `open_store` needs one, so importing this package
costs neither driver.
"""

from switch.store.base import (
    Approval,
    ApprovalDecision,
    ApprovalState,
    ArchivedMessage,
    AuditRecord,
    Batch,
    Direction,
    DirectoryDecision,
    DirectorySnapshot,
    JournalRow,
    OperatorRole,
    OperatorToken,
    PaymentQuery,
    PaymentRecord,
    PaymentUpdate,
    Recalled,
    RecallKeys,
    State,
    Store,
    open_store,
)

__all__ = [
    "Approval",
    "ApprovalDecision",
    "ApprovalState",
    "ArchivedMessage",
    "AuditRecord",
    "Batch",
    "Direction",
    "DirectoryDecision",
    "DirectorySnapshot",
    "JournalRow",
    "OperatorRole",
    "OperatorToken",
    "PaymentQuery",
    "PaymentRecord",
    "PaymentUpdate",
    "RecallKeys",
    "Recalled",
    "State",
    "Store",
    "open_store",
]
