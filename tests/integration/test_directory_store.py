"""The alias directory in the store (RULEBOOK §5), on SQLite and PostgreSQL alike.

Two `DirectoryService`s on one database stand for two processes (the engine and the
participant API, or two switch instances): every write is decided on the directory as
committed by all of them, and the history keeps every change.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from switch.core import Participant
from switch.directory import AliasStatus, AliasType, DirectoryError
from switch.directory_service import DirectoryService
from switch.engine import IdGenerator
from switch.store import Batch, Store, open_store
from tests.integration.test_store import Refused, raw_execute

A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
PARTICIPANTS = [
    Participant(id=A, member_id="021000021", name="Bank A"),
    Participant(id=B, member_id="011000015", name="Bank B"),
    Participant(id=C, member_id="026009593", name="Bank C"),
]


def service(store: Store, period: timedelta = timedelta(days=7)) -> DirectoryService:
    return DirectoryService(
        store, clock=lambda: datetime.now(UTC), claim_period=period, claim_ids=IdGenerator("CL")
    )


async def test_a_write_is_decided_on_what_another_process_committed(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    one, two = service(store), service(store)
    await one.start()
    await two.start()
    await one.register(
        participant=A, kind=AliasType.VPA, value="ann@banka", account="1", name="Ann"
    )
    # `two` has not refreshed: the store hands it `one`'s change inside its write.
    with pytest.raises(DirectoryError) as refused:
        await two.register(
            participant=B, kind=AliasType.VPA, value="ANN@bankA", account="2", name="Ann"
        )
    assert refused.value.code == "duplicate"
    assert two.directory.resolve(AliasType.VPA, "ann@banka") is not None


async def test_concurrent_registrations_of_one_alias_store_exactly_one(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    others = [open_store(store.url) for _ in range(3)]  # type: ignore[attr-defined]
    services = [service(s) for s in others]
    try:
        for svc in services:
            await svc.start()
        results = await asyncio.gather(
            *(
                svc.register(
                    participant=p.id,
                    kind=AliasType.EMAL,
                    value="shared@example.com",
                    account="9",
                    name="Sam",
                )
                for svc, p in zip(services, PARTICIPANTS, strict=True)
            ),
            return_exceptions=True,
        )
    finally:
        for other in others:
            await other.close()
    stored = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, DirectoryError)]
    assert len(stored) == 1 and len(refused) == 2, results
    snapshot = await store.directory_load()
    assert [c.action for c in snapshot.changes] == ["register"]


async def test_the_history_keeps_every_change_and_reloads_the_current_directory(
    store: Store,
) -> None:
    await store.upsert_participants(PARTICIPANTS)
    svc = service(store)
    await svc.start()
    alias = await svc.register(
        participant=A, kind=AliasType.TELE, value="+1 212 555 0100", account="1", name="Tia"
    )
    assert alias.value == "+12125550100"
    await svc.update(participant=A, kind=AliasType.TELE, value=alias.value, account="2")
    await svc.set_active(participant=A, kind=AliasType.TELE, value=alias.value, active=False)
    claim = await svc.claim(
        claimant=B, kind=AliasType.TELE, value=alias.value, account="7", name="Tia"
    )
    await svc.answer_claim(owner=A, claim_id=claim.id, confirm=True)
    changes = await store.directory_changes(0)
    assert [c.action for c in changes] == ["register", "update", "deactivate", "claim", "confirm"]
    assert [c.seq for c in changes] == [1, 2, 3, 4, 5]
    fresh = service(store)
    await fresh.start()
    moved = fresh.directory.get(AliasType.TELE, "+12125550100")
    assert moved is not None and moved.participant == B and moved.account == "7"
    assert moved.status is AliasStatus.ACTIVE  # the claimant takes it over active
    held = fresh.directory.get_claim(claim.id)
    assert held is not None and str(held.state) == "confirmed"
    assert fresh.seq == 5


async def test_the_history_is_append_only(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    svc = service(store)
    await svc.start()
    await svc.register(participant=A, kind=AliasType.VPA, value="a@banka", account="1", name="A")
    for sql in ("UPDATE directory_changes SET account = '2'", "DELETE FROM directory_changes"):
        with pytest.raises(Refused, match="append-only"):
            await raw_execute(store, sql)


async def test_the_notification_cursor_commits_with_a_batch(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    assert (await store.directory_load()).notified == 0
    await store.commit_batch(Batch(directory_notified=4))
    await store.commit_batch(Batch(directory_notified=2))  # never goes back
    assert (await store.directory_load()).notified == 4


async def test_an_expired_claim_completes_once_whoever_expires_it(store: Store) -> None:
    await store.upsert_participants(PARTICIPANTS)
    one, two = service(store, timedelta(milliseconds=1)), service(store)
    await one.start()
    await two.start()
    await one.register(participant=A, kind=AliasType.VPA, value="x@banka", account="1", name="X")
    await one.claim(claimant=C, kind=AliasType.VPA, value="x@banka", account="3", name="X")
    await asyncio.sleep(0.01)
    await two.refresh()
    done = await asyncio.gather(one.expire_due(), two.expire_due())
    assert sum(len(d) for d in done) == 1
    actions = [c.action for c in await store.directory_changes(0)]
    assert actions == ["register", "claim", "complete"]
