"""Reader processes: a large batch read in a worker process is read exactly as in-line."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from switch import heap
from switch.core import Participant
from switch.directory import AliasType
from switch.directory_service import DirectoryService
from switch.engine import Engine, IdGenerator
from switch.inbound import read_batch, read_in_reader, start_workers
from switch.iso20022 import MessageType, ParseLimits, default_registry, views
from switch.settings import load_settings
from switch.store.base import open_store
from switch.transport import Delivery, LocalNetwork
from switch.transport.local import LocalSwitchTransport

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
B = "BNKBUS33XXX"


def _mix() -> list[bytes]:
    good = (EXAMPLES / "pacs.008-bicfi.xml").read_bytes()
    answer = (EXAMPLES / "pacs.002-acsp.xml").read_bytes()
    bad_schema = good.replace(b"<ChrgBr>SLEV</ChrgBr>", b"<ChrgBr>DEBT</ChrgBr>")
    out: list[bytes] = []
    for i in range(50):
        out.append(good.replace(b"</MsgId>", b"%d</MsgId>" % i, 1))
        out.append(answer)
    out += [bad_schema, b"not xml", b"", b"<BizMsg/>"] * 10
    return out


async def test_a_reader_process_reads_what_the_event_loop_reads() -> None:
    items = [("BNKAUS33XXX", d) for d in _mix()]
    limits = ParseLimits()
    inline = read_batch(items, limits, default_registry())
    pool = await start_workers(1)
    try:
        remote = pool.submit(read_in_reader, items, limits).result(timeout=60)
    finally:
        pool.shutdown()
    assert remote == inline
    kinds = {(r.mtype, r.unusable is None, bool(r.issues)) for r in remote}
    assert (MessageType.PACS_008, True, False) in kinds  # clearable
    assert (MessageType.PACS_008, True, True) in kinds  # schema violation
    assert (None, False, False) in kinds  # unusable bytes
    clearable = next(r for r in remote if r.mtype is MessageType.PACS_008 and not r.issues)
    assert isinstance(clearable.body, views.CreditTransfer)
    assert clearable.forward is not None and clearable.forward.startswith(b"<Document")
    invalid = next(r for r in remote if r.issues)
    assert invalid.refs is not None and invalid.refs.msg_id != "NOTPROVIDED"


async def test_the_engine_reads_large_batches_in_its_reader_processes(tmp_path: Path) -> None:
    settings = load_settings(store=f"sqlite:///{tmp_path / 's.db'}")
    assert settings.engine.read_workers >= 1
    store = open_store(settings.store)
    await store.migrate()
    engine = Engine(settings=settings, store=store, transport=LocalSwitchTransport(LocalNetwork()))
    try:
        await engine.start()
        assert engine._readers is not None
        deliveries = [Delivery("BNKAUS33XXX", d) for d in _mix()]
        assert len(deliveries) >= 128
        engine._start_reading(deliveries)
        reading = engine._reading.popleft()
        assert not reading.prepared.done()  # in a reader process, not on the event loop
        read = await reading.prepared
        items = [(d.sender, d.data) for d in deliveries]
        assert read == read_batch(items, engine.limits, engine.registry)
        # A small batch is read on the event loop, unless one before it is still being
        # read in a reader process: then it goes there too, to be decided after it.
        engine._start_reading(deliveries[:3])
        assert engine._reading.popleft().prepared.done()
        engine._start_reading(deliveries)
        engine._start_reading(deliveries[:3])
        assert not any(r.prepared.done() for r in engine._reading)
        assert await engine._reading.pop().prepared == read[:3]
    finally:
        if engine._readers is not None:
            engine._readers.shutdown()
        await store.close()


async def test_a_batch_that_may_pay_aliases_asks_the_directory_while_it_is_read(
    tmp_path: Path,
) -> None:
    settings = load_settings(store=f"sqlite:///{tmp_path / 's.db'}")
    store = open_store(settings.store)
    await store.migrate()
    engine = Engine(settings=settings, store=store, transport=LocalSwitchTransport(LocalNetwork()))
    try:
        await store.upsert_participants([Participant(id=B, member_id="011000015", name="B")])
        await engine.start()
        # Another process registers an alias after the engine last read the directory.
        other = DirectoryService(
            store,
            clock=lambda: datetime.now(UTC),
            claim_period=timedelta(days=1),
            claim_ids=IdGenerator("CLM"),
        )
        await other.start()
        await other.register(
            participant=B, kind=AliasType.VPA, value="bob@bankb", account="9", name="Bob"
        )
        plain = [Delivery("BNKAUS33XXX", d) for d in _mix()]
        proxy = (EXAMPLES / "pacs.008-proxy.xml").read_bytes()
        engine._start_reading(plain)
        engine._start_reading([*plain, Delivery("BNKAUS33XXX", proxy)])
        without, with_alias = engine._reading
        assert without.directory is None
        assert with_alias.directory is not None and not with_alias.prepared.done()
        [registered] = await with_alias.directory
        assert registered.alias.value == "bob@bankb" and registered.seq > engine.directory.seq
        read = await with_alias.prepared
        assert read[-1].uses_directory and not any(r.uses_directory for r in read[:-1])
        await without.prepared
        # A small batch read in a reader process, behind a large one, asks too; one read
        # at once on the event loop asks when it is decided (nothing to overlap with).
        engine._reading.clear()
        engine._start_reading(plain)
        engine._start_reading([Delivery("BNKAUS33XXX", proxy)])
        engine._start_reading([Delivery("BNKAUS33XXX", plain[0].data)])
        large, small, small_plain = engine._reading
        assert small.directory is not None and not small.prepared.done()
        assert small_plain.directory is None
        assert [c.seq for c in await small.directory] == [registered.seq]
        assert (await small.prepared)[0].uses_directory
        await large.prepared
        await small_plain.prepared
        engine._reading.clear()
        engine._start_reading([Delivery("BNKAUS33XXX", proxy)])
        at_once = engine._reading.popleft()
        assert at_once.prepared.done() and at_once.directory is None
    finally:
        if engine._readers is not None:
            engine._readers.shutdown()
        await store.close()


_HOLDER = """
import asyncio, sys
from switch.inbound import start_workers

async def main():
    pool = await start_workers(1)
    print(*[p.pid for p in pool._processes.values()], flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_reader_processes_end_when_the_engine_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    root = str(Path(__file__).resolve().parents[2])
    holder = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert holder.stdout is not None
    readers = [int(pid) for pid in holder.stdout.readline().split()]
    assert readers
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in readers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in readers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped-by-init zombie still answers kill(0); its state says it is gone.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


async def test_what_is_alive_once_the_engine_started_is_left_out_of_collections(
    tmp_path: Path,
) -> None:
    """The collector's full passes stop the event loop for as long as they walk every
    object; the modules, schemas and state alive at start-up are frozen out of them."""
    settings = load_settings(store=f"sqlite:///{tmp_path / 's.db'}")
    settings = replace(settings, engine=replace(settings.engine, read_workers=0))
    store = open_store(settings.store)
    await store.migrate()
    engine = Engine(settings=settings, store=store, transport=LocalSwitchTransport(LocalNetwork()))
    gc.unfreeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        assert gc.get_freeze_count() == 0
        await engine.start()
        assert gc.get_freeze_count() > 10_000
        # Young collections come after 50,000 net allocations, not CPython's 700.
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *heap.OLDER_THRESHOLDS)
        assert heap.YOUNG_THRESHOLD == 50_000
    finally:
        gc.set_threshold(*thresholds)
        await store.close()


async def test_a_reader_process_settles_its_collector_as_the_engine_does() -> None:
    pool = await start_workers(1)
    try:
        assert pool.submit(gc.get_threshold).result(timeout=30) == (
            heap.YOUNG_THRESHOLD,
            *heap.OLDER_THRESHOLDS,
        )
        assert pool.submit(gc.get_freeze_count).result(timeout=30) > 10_000
    finally:
        pool.shutdown()


async def test_the_directory_is_asked_again_only_for_batches_that_arrived_after_it_was_read(
    tmp_path: Path,
) -> None:
    settings = load_settings(store=f"sqlite:///{tmp_path / 's.db'}")
    settings = replace(settings, engine=replace(settings.engine, read_workers=0))
    store = open_store(settings.store)
    await store.migrate()
    engine = Engine(settings=settings, store=store, transport=LocalSwitchTransport(LocalNetwork()))
    asked: list[int] = []
    changes = store.directory_changes

    async def counted(after: int) -> Any:
        asked.append(after)
        return await changes(after)

    try:
        await engine.start()
        proxy = (EXAMPLES / "pacs.008-proxy.xml").read_bytes()
        engine._start_reading([Delivery("BNKAUS33XXX", proxy)])
        first = engine._reading.popleft()
        engine._start_reading([Delivery("BNKAUS33XXX", proxy)])
        second = engine._reading.popleft()
        store.directory_changes = counted  # type: ignore[method-assign]
        engine._next_directory_poll = float("inf")  # no periodic look in between
        await engine._follow_directory(await first.prepared, None, first.started)
        assert len(asked) == 1
        # Both arrived before that query started: it serves the second batch too.
        await engine._follow_directory(await second.prepared, None, second.started)
        assert len(asked) == 1
        engine._start_reading([Delivery("BNKAUS33XXX", proxy)])
        third = engine._reading.popleft()  # arrived after it: the directory is asked again
        await engine._follow_directory(await third.prepared, None, third.started)
        assert len(asked) == 2
        await engine._follow_directory(await third.prepared)  # arrival unknown: asked
        assert len(asked) == 3
    finally:
        await store.close()


async def test_the_periodic_directory_look_runs_beside_the_loop(tmp_path: Path) -> None:
    """The look every quarter of a second (claims that ran out, claim steps to tell the
    banks) is not waited for: a batch that needs no directory goes on while it runs."""
    settings = load_settings(store=f"sqlite:///{tmp_path / 's.db'}")
    settings = replace(settings, engine=replace(settings.engine, read_workers=0))
    store = open_store(settings.store)
    await store.migrate()
    engine = Engine(settings=settings, store=store, transport=LocalSwitchTransport(LocalNetwork()))
    release = asyncio.Event()
    asked: list[int] = []
    changes = store.directory_changes

    async def held(after: int) -> Any:
        asked.append(after)
        await release.wait()
        return await changes(after)

    try:
        await engine.start()
        store.directory_changes = held  # type: ignore[method-assign]
        engine._next_directory_poll = 0.0  # a look is due
        plain = (EXAMPLES / "pacs.008-bicfi.xml").read_bytes()
        engine._start_reading([Delivery("BNKAUS33XXX", plain)])
        head = engine._reading.popleft()
        prepared = await head.prepared
        # Returns while the look it started is held in the store.
        await asyncio.wait_for(engine._follow_directory(prepared, None, head.started), 5)
        assert len(asked) == 1 and engine._directory_poll is not None
        await asyncio.wait_for(engine._follow_directory(prepared, None, head.started), 5)
        assert len(asked) == 1  # one look at a time
        release.set()
        look, started = engine._directory_poll
        await look
        await engine._follow_directory(prepared, None, head.started)
        assert engine._directory_poll is None  # applied at the next turn
        assert engine._directory_asof == started
    finally:
        await store.close()
