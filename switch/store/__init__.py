"""Persistence: the store interface and `open_store`, which picks the adapter by URL.

The adapters (`switch.store.postgres` on asyncpg, `switch.store.sqlite` on the stdlib
`sqlite3`) are imported only when `open_store` needs one, so importing this package
costs neither driver.
"""

from switch.store.base import (
    ArchivedMessage,
    Batch,
    Direction,
    DirectoryDecision,
    DirectorySnapshot,
    PaymentRecord,
    PaymentUpdate,
    State,
    Store,
    open_store,
)

__all__ = [
    "ArchivedMessage",
    "Batch",
    "Direction",
    "DirectoryDecision",
    "DirectorySnapshot",
    "PaymentRecord",
    "PaymentUpdate",
    "State",
    "Store",
    "open_store",
]
