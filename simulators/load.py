"""Load generator: payments through the real engine, measured end to end.

Theory: four simulated banks, funded far beyond what the run can spend, send credit
transfers to each other through the in-process transport; every creditor bank accepts.
The engine runs on a real store (SQLite file, or PostgreSQL). Latency is measured at the
debtor bank, from handing the pacs.008 to the transport to receiving the final ACSC,
so it covers both legs, the creditor's answer, and both group commits.

Two modes: closed loop (default: keep `window` payments in flight, which finds the
highest sustainable throughput) and open loop (`rate`: send at a fixed rate, which is
how latency at a given load is measured). The report gives payments/s, p50/p99 latency
and the store's transactions and round trips per payment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from simulators.bank import SimulatedBank
from switch.core import Participant
from switch.core.money import to_minor
from switch.engine import Engine
from switch.iso20022.views import Agent
from switch.settings import Settings
from switch.store.base import open_store
from switch.transport import LocalNetwork

BANKS: Final = (
    ("BNKAUS33XXX", "021000021", "Bank A"),
    ("BNKBUS33XXX", "011000015", "Bank B"),
    ("BNKCUS33XXX", "026009593", "Bank C"),
    ("BNKDUS33XXX", "121000358", "Bank D"),
)
OPENING: Final = Decimal("1000000000.00")


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
) -> BenchResult:
    """Clear payments for `seconds` (after `warmup`) and measure."""
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
        creditor = agents[(i + 1 + (i // 4) % 3) % 4]
        t0 = time.perf_counter()
        sent = await debtor.pay(creditor_agent=creditor, amount=Decimal(100 + i % 9000).scaleb(-2))
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
        measuring = True
        t0 = time.perf_counter()
        await drive(t0 + seconds)
        await asyncio.gather(*inflight)
        elapsed = time.perf_counter() - t0
        tx = getattr(store, "transactions", 0) - tx0
        rt = getattr(store, "round_trips", 0) - rt0
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
        mode=f"open loop at {rate:g}/s" if rate is not None else f"closed loop, window {window}",
        store=settings.store.split("@")[-1],
    )
