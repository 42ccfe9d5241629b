"""Reader processes: a large batch read in a worker process is read exactly as in-line."""

from __future__ import annotations

from pathlib import Path

from switch.engine import Engine
from switch.inbound import read_batch, start_workers
from switch.iso20022 import MessageType, ParseLimits, default_registry, views
from switch.settings import load_settings
from switch.store.base import open_store
from switch.transport import Delivery, LocalNetwork
from switch.transport.local import LocalSwitchTransport

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
    datas = _mix()
    limits = ParseLimits()
    inline = read_batch(datas, limits, default_registry())
    pool = await start_workers(1)
    try:
        remote = pool.submit(read_batch, datas, limits).result(timeout=60)
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
        read = await engine._read(deliveries)
        assert read == read_batch([d.data for d in deliveries], engine.limits, engine.registry)
    finally:
        if engine._readers is not None:
            engine._readers.shutdown()
        await store.close()
