"""Load generator: payments through the real engine, measured end to end.

Theory: four simulated banks, funded far beyond what the run can spend, send credit
transfers to each other through the in-process transport; every creditor bank accepts.
The engine runs on a real store (SQLite file, or PostgreSQL). Latency is measured at the
debtor bank, from handing the pacs.008 to the transport to receiving the final ACSC,
so it covers both legs, the creditor's answer, and both group commits.

Two modes: closed loop (default: keep `window` payments in flight, which finds the
highest sustainable throughput) and open loop (`rate`: send at a fixed rate, which is
how latency at a given load is measured). The report gives payments/s, p50/p99 latency
and the store's transactions and round trips per payment. With `aliases`, every payment
pays an alias (`CdtrAcct/Prxy`, creditor agent the switch) out of `ALIASES_PER_BANK` per
bank, which the switch resolves at clearing time.

`run_lookups` measures the alias lookup path the same way: the banks send acmt.023 over
the in-process transport and wait for the acmt.024, through the real engine and store.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from participants.messages import envelope, identification_verification_request
from simulators.bank import SimulatedBank
from switch.core import Participant
from switch.core.money import to_minor
from switch.directory import BucketSettings
from switch.engine import Engine, EngineStats
from switch.iso20022 import MessageType
from switch.iso20022.views import Agent, Proxy
from switch.settings import Settings
from switch.store.base import Store, open_store
from switch.transport import LocalNetwork

BANKS: Final = (
    ("BNKAUS33XXX", "021000021", "Bank A"),
    ("BNKBUS33XXX", "011000015", "Bank B"),
    ("BNKCUS33XXX", "026009593", "Bank C"),
    ("BNKDUS33XXX", "121000358", "Bank D"),
)
OPENING: Final = Decimal("1000000000.00")
ALIASES_PER_BANK: Final = 1000
"""Aliases registered per bank for the alias runs (payments and lookups)."""


def bench_alias(bank: int, i: int) -> str:
    """The VPA of account `i` at bank number `bank` (registered by `register_aliases`)."""
    return f"acct{i}@bank{bank}"


async def register_aliases(engine: Engine, participants: list[Participant]) -> None:
    """Register `ALIASES_PER_BANK` VPAs per bank (once per store) through the directory."""
    directory = engine.directory
    if len(directory.directory):
        return
    rows = [
        {
            "participant": p.id,
            "type": "VPA",
            "value": bench_alias(b, i),
            "account": f"{b}{i:09d}",
            "name": f"Holder {i} Of Bank {b}",
        }
        for b, p in enumerate(participants)
        for i in range(ALIASES_PER_BANK)
    ]
    report = await directory.import_rows(rows, actor="operator:bench")
    if report.errors:
        first = report.errors[0]
        raise ValueError(f"bench alias row {first.row}: {first.message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResult:
    """The figures of one run."""

    payments: int
    seconds: float
    payments_per_second: float
    p50_ms: float
    p99_ms: float
    db_transactions_per_payment: float
    db_round_trips_per_payment: float
    mode: str
    store: str
    stage_ms: dict[str, float]
    """Mean milliseconds one engine batch spent in each stage during the measurement."""
    deliveries_per_batch: float

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "payments": self.payments,
            "seconds": round(self.seconds, 3),
            "payments_per_second": round(self.payments_per_second, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "db_transactions_per_payment": round(self.db_transactions_per_payment, 4),
            "db_round_trips_per_payment": round(self.db_round_trips_per_payment, 4),
            "mode": self.mode,
            "store": self.store,
            "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
            "deliveries_per_batch": round(self.deliveries_per_batch, 1),
        }


def _stage_totals(stats: EngineStats) -> dict[str, tuple[int, float]]:
    """(batches, seconds) so far of each engine stage, and deliveries per batch."""
    return {
        "read": (stats.stage_read.count, stats.stage_read.sum),
        "decide": (stats.stage_decide.count, stats.stage_decide.sum),
        "commit": (stats.stage_commit.count, stats.stage_commit.sum),
        "send": (stats.stage_send.count, stats.stage_send.sum),
        "batch": (stats.batch_size.count, stats.batch_size.sum),
    }


def percentile(sorted_ms: list[float], q: float) -> float:
    """The `q` quantile (nearest rank) of ascending `sorted_ms`; 0 when empty."""
    if not sorted_ms:
        return 0.0
    i = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[i]


async def run_load(
    settings: Settings,
    *,
    seconds: float = 10.0,
    rate: float | None = None,
    window: int = 1000,
    warmup: float = 1.0,
    aliases: bool = False,
) -> BenchResult:
    """Clear payments for `seconds` (after `warmup`) and measure."""
    store, participants, net, engine = await _switch(settings)
    if aliases:
        await register_aliases(engine, participants)
    switch_agent = Agent(bicfi=settings.scheme.switch_bicfi)
    banks = [
        SimulatedBank(
            bicfi=p.id,
            member_id=p.member_id,
            name=p.name,
            channel=net.connect(p.id),
            response_timeout=settings.response_timeout,
        )
        for p in participants
    ]
    agents = [Agent(bicfi=p.id) for p in participants]
    # The aliases paid, made once (the banks' own costs share the switch's thread).
    proxies = [
        [
            Proxy(type_code=None, type_proprietary="VPA", id=bench_alias(c, j))
            for j in range(ALIASES_PER_BANK if aliases else 0)
        ]
        for c in range(len(participants))
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(engine.run(stop))]
    tasks += [asyncio.create_task(b.run()) for b in banks]
    latencies: list[float] = []
    inflight: set[asyncio.Task[None]] = set()
    measuring = False
    measured = 0
    n = 0
    slots = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        nonlocal measured
        debtor = banks[i % 4]
        c = (i + 1 + (i // 4) % 3) % 4
        creditor, proxy = agents[c], None
        if aliases:
            creditor, proxy = switch_agent, proxies[c][(i // 4) % ALIASES_PER_BANK]
        t0 = time.perf_counter()
        sent = await debtor.pay(
            creditor_agent=creditor, amount=Decimal(100 + i % 9000).scaleb(-2), proxy=proxy
        )
        final = await debtor.wait_final(sent.uetr, settings.response_timeout * 4)
        if final is not None and measuring:
            latencies.append((time.perf_counter() - t0) * 1000)
            measured += 1
        debtor.forget(sent.uetr)
        slots.release()

    async def drive(until: float) -> None:
        nonlocal n
        start, first = time.perf_counter(), n
        while time.perf_counter() < until:
            await slots.acquire()
            if rate is not None:
                due = start + (n - first) / rate - time.perf_counter()
                if due > 0:
                    await asyncio.sleep(due)
            t = asyncio.create_task(one(n))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            n += 1

    try:
        await drive(time.perf_counter() + warmup)
        tx0 = getattr(store, "transactions", 0)
        rt0 = getattr(store, "round_trips", 0)
        stages0 = _stage_totals(engine.stats)
        measuring = True
        t0 = time.perf_counter()
        await drive(t0 + seconds)
        await asyncio.gather(*inflight)
        elapsed = time.perf_counter() - t0
        tx = getattr(store, "transactions", 0) - tx0
        rt = getattr(store, "round_trips", 0) - rt0
        stages = {
            k: (n - stages0[k][0], total - stages0[k][1])
            for k, (n, total) in _stage_totals(engine.stats).items()
        }
    finally:
        stop.set()
        for b in banks:
            b.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    latencies.sort()
    return BenchResult(
        payments=measured,
        seconds=elapsed,
        payments_per_second=measured / elapsed if elapsed else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        db_transactions_per_payment=tx / measured if measured else 0.0,
        db_round_trips_per_payment=rt / measured if measured else 0.0,
        mode=(f"open loop at {rate:g}/s" if rate is not None else f"closed loop, window {window}")
        + (", every payment to an alias" if aliases else ""),
        store=settings.store.split("@")[-1],
        stage_ms={
            k: total * 1000 / n if n else 0.0 for k, (n, total) in stages.items() if k != "batch"
        },
        deliveries_per_batch=stages["batch"][1] / stages["batch"][0] if stages["batch"][0] else 0.0,
    )


async def _switch(settings: Settings) -> tuple[Store, list[Participant], LocalNetwork, Engine]:
    """The store (migrated, four funded banks) and a started engine on a local network."""
    store = open_store(settings.store)
    await store.migrate()
    participants = [Participant(id=b, member_id=m, name=n) for b, m, n in BANKS]
    await store.upsert_participants(participants)
    net = LocalNetwork()
    engine = Engine(settings=settings, store=store, transport=net.switch)
    await engine.start()
    for p in participants:
        if engine.book.position(p.id).available < to_minor(OPENING) // 2:
            await engine.fund(p.id, to_minor(OPENING), "bench-opening")
    return store, participants, net, engine


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    """The figures of one lookup run."""

    lookups: int
    seconds: float
    lookups_per_second: float
    p50_ms: float
    p99_ms: float
    found: int
    refused: int
    db_transactions_per_lookup: float
    store: str

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "lookups": self.lookups,
            "seconds": round(self.seconds, 3),
            "lookups_per_second": round(self.lookups_per_second, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "found": self.found,
            "refused": self.refused,
            "db_transactions_per_lookup": round(self.db_transactions_per_lookup, 4),
            "store": self.store,
        }


_ORIGINAL_ID: Final = re.compile(rb"<OrgnlAssgnmt><MsgId>([^<]+)</MsgId>")
_MARK: Final = "LKPMSGIDMARK000000000000000"


async def run_lookups(
    settings: Settings,
    *,
    seconds: float = 10.0,
    window: int = 1000,
    warmup: float = 1.0,
    miss_every: int = 10,
) -> LookupResult:
    """Look aliases up over acmt.023/acmt.024 for `seconds` (after `warmup`) and measure.

    Four banks keep `window` lookups in flight between them, each asking about the other
    banks' aliases; one in `miss_every` asks about an alias nobody registered. The
    requests are rendered from one template per (bank, alias), only the message id and
    the header's id changing, so the driver costs little beside the switch.
    """
    # The banks' token buckets are lifted: this measures the lookup path, not the limiter.
    unlimited = BucketSettings(size=1e12, refill_per_second=1e12)
    settings = replace(
        settings, directory=replace(settings.directory, participant_bucket=unlimited)
    )
    store, participants, net, engine = await _switch(settings)
    await register_aliases(engine, participants)
    switch_agent = Agent(bicfi=settings.scheme.switch_bicfi)
    channels = [net.connect(p.id) for p in participants]
    created = datetime.now(UTC)

    def template(bank: int, alias: str) -> str:
        me = Agent(bicfi=participants[bank].id)
        doc = identification_verification_request(
            msg_id=_MARK, created=created, alias_type="VPA", alias=alias, assigner=me
        )
        raw = envelope(me, switch_agent, MessageType.ACMT_023, _MARK, doc, created)
        return raw.decode()

    templates = [
        [
            template(b, bench_alias((b + 1 + k % 3) % 4, k % ALIASES_PER_BANK))
            if k % miss_every
            else template(b, f"nobody{k}@bank{b}")
            for k in range(64)
        ]
        for b in range(4)
    ]
    waiting: dict[str, asyncio.Future[None]] = {}
    latencies: list[float] = []
    measuring = False
    slots = asyncio.Semaphore(window)
    stop = asyncio.Event()

    async def receive(bank: int) -> None:
        # Without a timeout a waiting answer is taken without a trip through the event
        # loop (a timeout makes each receive a task of its own): the banks keep up with
        # the switch however many answers one commit releases. Cancelled at the end.
        channel = channels[bank]
        while True:
            raw = await channel.receive()
            assert raw is not None
            m = _ORIGINAL_ID.search(raw)
            fut = waiting.pop(m.group(1).decode(), None) if m else None
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def one(n: int) -> None:
        bank = n % 4
        msg_id = f"L{n:026d}"
        raw = templates[bank][(n // 4) % 64].replace(_MARK, msg_id).encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting[msg_id] = fut
        t0 = time.perf_counter()
        await channels[bank].send(raw)
        try:
            await asyncio.wait_for(fut, 30)
            if measuring:
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            waiting.pop(msg_id, None)
            slots.release()

    inflight: set[asyncio.Task[None]] = set()
    count = 0

    async def drive(until: float) -> None:
        nonlocal count
        while time.perf_counter() < until:
            await slots.acquire()
            t = asyncio.create_task(one(count))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            count += 1

    tasks = [asyncio.create_task(engine.run(stop))]
    receivers = [asyncio.create_task(receive(b)) for b in range(4)]
    tasks += receivers
    try:
        await drive(time.perf_counter() + warmup)
        await asyncio.gather(*inflight)
        tx0 = getattr(store, "transactions", 0)
        found0, refused0 = engine.stats.lookups_found, engine.stats.lookups_refused
        measuring = True
        t0 = time.perf_counter()
        await drive(t0 + seconds)
        await asyncio.gather(*inflight)
        elapsed = time.perf_counter() - t0
        tx = getattr(store, "transactions", 0) - tx0
        found = engine.stats.lookups_found - found0
        refused = engine.stats.lookups_refused - refused0
    finally:
        stop.set()
        for r in receivers:
            r.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    latencies.sort()
    done = len(latencies)
    return LookupResult(
        lookups=done,
        seconds=elapsed,
        lookups_per_second=done / elapsed if elapsed else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        found=found,
        refused=refused,
        db_transactions_per_lookup=tx / done if done else 0.0,
        store=settings.store.split("@")[-1],
    )
