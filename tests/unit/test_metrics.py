"""Engine observability: the histogram, EngineStats on a real run, the Prometheus exposition.

The run is the real engine on an in-process network and an in-memory SQLite store, with
two simulated banks: it clears payments that settle, are rejected by the creditor, are
rejected by the switch (AM04, DUPL, an unusable message) and time out, and the test then
checks the engine's counters and the text a scrape renders.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from simulators import SimulatedBank
from switch.core import Participant, ParticipantStatus
from switch.core.money import to_minor
from switch.demo import RecordingTransport
from switch.engine import Engine
from switch.iso20022.views import Agent
from switch.latency import LatencyHistogram, percentiles
from switch.metrics import EngineCollector, render_metrics
from switch.settings import load_settings
from switch.store.base import Store, open_store
from switch.transport import Delivery, LocalNetwork, Observable

A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
MEMBERS = {A: "021000021", B: "011000015", C: "026009593"}
OPENING = Decimal("1000.00")
RESPONSE_TIMEOUT = 1.5
"""Long enough for the other payments to be final while the silent one is in flight."""

# --- LatencyHistogram -----------------------------------------------------------------------


def test_a_value_on_a_bound_counts_in_that_bucket_and_above_the_last_in_inf() -> None:
    h = LatencyHistogram((0.1, 0.5, 1.0))
    for v in (0.0, 0.1, 0.10000001, 0.5, 0.7, 1.0, 1.5, 30.0):
        h.observe(v)
    assert h.counts == [2, 2, 2, 2]  # (<=0.1) (<=0.5) (<=1.0) (+Inf)
    assert h.cumulative() == [(0.1, 2), (0.5, 4), (1.0, 6), (math.inf, 8)]
    assert h.count == 8
    assert h.sum == pytest.approx(0.0 + 0.1 + 0.10000001 + 0.5 + 0.7 + 1.0 + 1.5 + 30.0)


def test_an_empty_histogram_has_zero_everywhere() -> None:
    h = LatencyHistogram()
    assert h.count == 0 and h.sum == 0.0
    assert all(n == 0 for _, n in h.cumulative())
    assert h.cumulative()[-1][0] == math.inf
    assert len(h.cumulative()) == len(h.bounds) + 1


@pytest.mark.parametrize(
    "bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)], ids=["none", "equal", "down", "inf"]
)
def test_bounds_must_be_finite_and_strictly_increasing(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram(bounds)


def test_percentiles_are_nearest_rank_and_none_without_samples() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert percentiles(samples, (50, 90, 99, 100)) == [50.0, 90.0, 99.0, 100.0]
    assert percentiles([3.0], (50, 99)) == [3.0, 3.0]
    assert percentiles([5.0, 1.0, 3.0], (1, 50, 100)) == [1.0, 3.0, 5.0]
    assert percentiles([], (50, 99)) == [None, None]
    with pytest.raises(ValueError):
        percentiles([1.0], (0,))


# --- transports -----------------------------------------------------------------------------


async def test_local_transport_counts_its_inbox_and_knows_who_has_a_channel() -> None:
    net = LocalNetwork()
    switch = net.switch
    assert isinstance(switch, Observable)
    assert await switch.queue_depth() == 0
    a = net.connect(A)
    await switch.send(B, b"to b")  # B's queue exists now, but B never connected
    await a.send(b"one")
    await a.send(b"two")
    assert await switch.queue_depth() == 2
    assert await switch.connected([A, B, C]) == {A: True, B: False, C: False}
    got = await switch.receive_batch(10, 0.1)
    assert len(got) == 2
    assert await switch.queue_depth() == 0
    net.disconnect(A)
    assert await switch.connected([A]) == {A: False}


class _Plain:
    """A switch transport that cannot tell anything about itself."""

    async def receive_batch(self, max_items: int, timeout: float) -> list[Delivery]:
        return []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        pass

    async def send(self, participant: str, data: bytes) -> None:
        pass

    async def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        pass


class _Broken(_Plain):
    """A transport whose observability fails (it must not break a scrape)."""

    async def queue_depth(self) -> int | None:
        raise ConnectionError("broker gone")

    async def connected(self, participants: Collection[str]) -> dict[str, bool]:
        raise ConnectionError("broker gone")


async def test_recording_transport_passes_the_questions_on(tmp_path: Path) -> None:
    net = LocalNetwork()
    net.connect(A)
    await net.connect(B).send(b"x")
    recording = RecordingTransport(net.switch, tmp_path / "rec")
    assert isinstance(recording, Observable)
    assert await recording.queue_depth() == 1
    assert await recording.connected([A, C]) == {A: True, C: False}
    blind = RecordingTransport(_Plain(), tmp_path / "blind")
    assert await blind.queue_depth() is None
    assert await blind.connected([A]) == {A: False}


# --- an engine run --------------------------------------------------------------------------


@dataclass
class Run:
    engine: Engine
    network: LocalNetwork
    store: Store
    bank_a: SimulatedBank
    bank_b: SimulatedBank


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """The engine clearing on an in-process network: banks A and B running, C offline."""
    settings = load_settings(store="sqlite://:memory:", response_timeout=RESPONSE_TIMEOUT)
    settings = replace(settings, engine=replace(settings.engine, read_workers=0))
    store = open_store(settings.store)
    await store.migrate()
    await store.upsert_participants(
        Participant(id=bic, member_id=mid, name=bic, status=ParticipantStatus.ACTIVE)
        for bic, mid in MEMBERS.items()
    )
    network = LocalNetwork()
    engine = Engine(settings=settings, store=store, transport=network.switch)
    await engine.start()
    for bic in MEMBERS:
        await engine.fund(bic, to_minor(OPENING), "opening")
    banks = [
        SimulatedBank(
            bicfi=bic,
            member_id=MEMBERS[bic],
            name=bic,
            channel=network.connect(bic),
            behaviours={"222": "reject:AC04", "333": "silent"},
            response_timeout=RESPONSE_TIMEOUT,
        )
        for bic in (A, B)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(engine.run(stop))]
    tasks += [asyncio.create_task(bank.run()) for bank in banks]
    try:
        yield Run(engine, network, store, banks[0], banks[1])
    finally:
        for bank in banks:
            bank.stop()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await store.close()
        for bank in banks:
            assert bank.errors == []


async def _final(bank: SimulatedBank, uetr: str) -> tuple[str, str | None]:
    final = await bank.wait_final(uetr, RESPONSE_TIMEOUT + 3)
    assert final is not None, f"no final status for {uetr}"
    return final.status, final.reason


async def _until(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _families(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in out, f"{family.name} exposed twice"
        out[family.name] = list(family.samples)
    return out


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found} in {samples}"
    return found[0]


async def test_engine_counts_what_it_clears_and_a_scrape_renders_it(run: Run) -> None:
    engine, a, b = run.engine, run.bank_a, run.bank_b
    to_b = Agent(bicfi=B)
    stats = engine.stats
    assert stats.in_flight == 0

    silent = await a.pay(creditor_agent=to_b, amount=Decimal("7.00"), creditor_account="333")
    await _until(lambda: stats.in_flight == 1)
    settled = [await a.pay(creditor_agent=to_b, amount=Decimal("10.00")) for _ in range(2)]
    refused = await a.pay(creditor_agent=to_b, amount=Decimal("5.00"), creditor_account="222")
    too_much = await a.pay(creditor_agent=to_b, amount=Decimal("5000.00"))
    for p in settled:
        assert await _final(a, p.uetr) == ("ACSC", None)
    assert await _final(a, refused.uetr) == ("RJCT", "AC04")
    assert await _final(a, too_much.uetr) == ("RJCT", "AM04")
    duplicate = await a.pay(creditor_agent=to_b, amount=Decimal("1.00"), uetr=settled[0].uetr)
    await run.network.connect(A).send(b"not a business message")
    await _until(lambda: stats.duplicates == 1 and stats.messages_in_by_type["unknown"] == 1)
    assert duplicate.uetr == settled[0].uetr

    # The silent payment is still waiting for its creditor agent.
    assert stats.in_flight == 1
    assert engine.book.position(A).reserved == to_minor(Decimal("7.00"))
    body, content_type = await render_metrics(engine, run.network.switch)
    assert content_type.startswith("text/plain")
    during = _families(body.decode())
    assert _value(during["rtpswitch_in_flight_payments"], "rtpswitch_in_flight_payments") == 1
    assert _value(
        during["rtpswitch_position_reserved"], "rtpswitch_position_reserved", participant=A
    ) == pytest.approx(7.0)

    assert await _final(a, silent.uetr) == ("RJCT", "AB05")
    assert stats.in_flight == 0

    # EngineStats, as counted.
    assert dict(stats.finals) == {
        ("settled", ""): 2,
        ("rejected", "AC04"): 1,
        ("rejected", "AM04"): 1,
        ("timed_out", "AB05"): 1,
    }
    assert (stats.settled, stats.rejected, stats.timed_out) == (2, 2, 1)
    assert stats.duplicates == 1
    assert not stats.signature_failures  # no message security in this run
    assert stats.messages_in_by_type == {"pacs.008": 6, "pacs.002": 3, "unknown": 1}
    # Forwarded: 4 pacs.008. Status reports: 2 x (ACSC, ACCC), RJCT AC04, RJCT AM04,
    # RJCT DUPL, RJCT AB05 to both agents. The unusable message: one admi.002.
    assert stats.messages_out_by_type == {"pacs.008": 4, "pacs.002": 9, "admi.002": 1}
    assert stats.end_to_end.count == 5 == len(stats.recent_latencies)
    assert max(stats.recent_latencies) >= RESPONSE_TIMEOUT  # the time-out
    assert stats.end_to_end.sum == pytest.approx(sum(stats.recent_latencies))
    await _until(lambda: stats.messages_in == 10)  # the last batch is committed and sent
    assert stats.batch_size.count == stats.batches
    assert stats.batch_size.sum == stats.messages_in
    for stage in (stats.stage_read, stats.stage_decide, stats.stage_commit, stats.stage_send):
        assert stage.count > 0
        assert stage.sum > 0

    # The exposition, parsed back.
    body, _ = await render_metrics(engine, run.network.switch)
    families = _families(body.decode())

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        return _value(families[family], sample or family, **labels)

    assert value("rtpswitch_payments", "rtpswitch_payments_total", state="settled", reason="") == 2
    assert (
        value("rtpswitch_payments", "rtpswitch_payments_total", state="rejected", reason="AC04")
        == 1
    )
    assert (
        value("rtpswitch_payments", "rtpswitch_payments_total", state="timed_out", reason="AB05")
        == 1
    )
    assert value("rtpswitch_timeouts", "rtpswitch_timeouts_total") == 1
    assert value("rtpswitch_duplicates", "rtpswitch_duplicates_total") == 1
    assert families["rtpswitch_signature_failures"] == []
    assert value("rtpswitch_messages_in", "rtpswitch_messages_in_total", type="pacs.008") == 6
    assert value("rtpswitch_messages_in", "rtpswitch_messages_in_total", type="unknown") == 1
    assert value("rtpswitch_messages_out", "rtpswitch_messages_out_total", type="admi.002") == 1
    assert value("rtpswitch_engine_batches", "rtpswitch_engine_batches_total") == stats.batches
    assert value("rtpswitch_in_flight_payments") == 0
    assert value("rtpswitch_batch_backlog") == 0
    # Positions in currency units: A paid 2 x 10.00 to B; the rest was released.
    assert value("rtpswitch_position_available", participant=A) == pytest.approx(980.0)
    assert value("rtpswitch_position_available", participant=B) == pytest.approx(1020.0)
    assert value("rtpswitch_position_available", participant=C) == pytest.approx(1000.0)
    assert value("rtpswitch_position_reserved", participant=A) == 0
    assert value("rtpswitch_queue_depth") == 0
    assert value("rtpswitch_participant_connected", participant=A) == 1
    assert value("rtpswitch_participant_connected", participant=B) == 1
    assert value("rtpswitch_participant_connected", participant=C) == 0  # never connected

    latency = "rtpswitch_payment_latency_seconds"
    assert value(latency, f"{latency}_count") == 5
    assert value(latency, f"{latency}_bucket", le="+Inf") == 5
    assert value(latency, f"{latency}_sum") == pytest.approx(stats.end_to_end.sum)
    assert value(latency, f"{latency}_bucket", le="1.0") == 4  # all but the time-out
    buckets = [s.value for s in families[latency] if s.name == f"{latency}_bucket"]
    assert buckets == sorted(buckets)  # cumulative
    stages = "rtpswitch_stage_latency_seconds"
    for name in ("read", "decide", "commit", "send"):
        assert value(stages, f"{stages}_count", stage=name) > 0
    size = "rtpswitch_batch_size"
    assert value(size, f"{size}_count") == stats.batches
    assert value(size, f"{size}_sum") == 10
    # The process-wide registry follows the engine's families in the same exposition.
    assert "rtpswitch_alias_lookups" in families
    assert b.counters["answered"] == 3


async def test_a_scrape_survives_a_transport_that_cannot_or_will_not_tell(run: Run) -> None:
    for transport in (_Plain(), _Broken()):
        body, _ = await render_metrics(run.engine, transport, participants=[A, B])
        families = _families(body.decode())
        assert "rtpswitch_queue_depth" not in families  # unknown: not exposed as 0
        connected = families["rtpswitch_participant_connected"]
        assert {s.labels["participant"]: s.value for s in connected} == {A: 0.0, B: 0.0}


async def test_the_collector_reads_the_engine_at_collect_time(run: Run) -> None:
    collector = EngineCollector(run.engine, run.network.switch)
    view = await collector.refresh()
    assert view.connected == {A: True, B: True, C: False}  # every participant by default
    before = {f.name: f.samples for f in collector.collect()}
    run.engine.stats.duplicates += 41
    run.engine.stats.messages_in_by_type["pacs.028"] += 3
    after = {f.name: f.samples for f in collector.collect()}
    assert [s.value for s in before["rtpswitch_duplicates"]] == [0]
    assert [s.value for s in after["rtpswitch_duplicates"]] == [41]
    assert [(s.labels, s.value) for s in after["rtpswitch_messages_in"]] == [
        ({"type": "pacs.028"}, 3)
    ]
