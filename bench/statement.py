"""End-of-day benchmark: one participant's statement of a busy business day.

    python -m bench.statement --entries 100000 [--store URL] [--json]

It books `--entries` fundings and defundings of bank A into the journal of today's
business day (on a fresh SQLite database, or on the PostgreSQL database `--store`
names, which should be one of its own), then has the rollover make the day's
statements as it would at the end of the day: each participant's camt.053, written
page by page from the journal, signed by the switch as a stream and delivered to its
SFTP outbox. It reports the seconds the rollover took, the size of A's statement, and
the process's peak resident memory before and after (VmHWM; the booking itself holds
little), so that memory that grows with the day shows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sftp_bridge.rollover import Rollover
from switch.core import Participant
from switch.engine import Engine
from switch.ledger import net_deltas
from switch.security.messages import MessageSecurity
from switch.security.pki import SchemeCA
from switch.settings import BatchSettings, load_settings
from switch.store.base import Batch, open_store
from switch.transport import LocalNetwork

A, B, SWITCH_ID = "BNKAUS33XXX", "BNKBUS33XXX", "SWCHUS33XXX"
_BOOKED_AT_ONCE = 2000


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(entries: int, store_url: str | None, work: Path) -> dict[str, Any]:
    url = store_url or f"sqlite:///{work / 'statement.db'}"
    pki = work / "pki"
    ca = SchemeCA.init(pki)
    for p in (SWITCH_ID, A, B):
        ca.ensure(p)
    settings = load_settings(store=url)
    batch = BatchSettings(root=work / "sftp", host_key=work / "host_key")
    settings = dataclasses.replace(settings, batch=batch)
    store = open_store(url)
    try:
        await store.migrate()
        await store.upsert_participants(
            [
                Participant(id=A, member_id="111000025", name="Bank A"),
                Participant(id=B, member_id="222000025", name="Bank B"),
            ]
        )
        engine = Engine(
            settings=settings,
            store=store,
            transport=LocalNetwork().switch,
            security=MessageSecurity(pki, SWITCH_ID),
        )
        await engine.start()
        await engine.fund(B, 1, "bench-b")
        booked = 0
        while booked < entries:
            n = min(_BOOKED_AT_ONCE, entries - booked)
            journal = []
            for i in range(booked, booked + n):
                ref = f"bench-{i}"
                # Every third movement takes back some of what came in before it.
                moved = engine.book.defund(A, 1, ref) if i % 3 == 2 else engine.book.fund(A, 2, ref)
                journal += moved
            await store.commit_batch(Batch(journal=journal, deltas=net_deltas(journal)))
            booked += n
        rollover = Rollover(engine, batch.root, batch)
        day = rollover.calendar.day_of(datetime.now(UTC))
        before = _peak_rss_mb()
        started = time.perf_counter()
        done = await rollover.roll(day.end + rollover.delay + timedelta(seconds=1))
        seconds = time.perf_counter() - started
        after = _peak_rss_mb()
        mine = next(o for o in done if o.record.participant == A)
        return {
            "entries": mine.record.entries,
            "statements": len(done),
            "file_mb": round(mine.path.stat().st_size / 2**20, 1),
            "seconds": round(seconds, 2),
            "entries_per_second": round(mine.record.entries / seconds, 1),
            "peak_rss_mb_before": round(before, 1),
            "peak_rss_mb_after": round(after, 1),
            "store": store_url or "sqlite (fresh)",
        }
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statement", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--store", help="a PostgreSQL URL (default: a fresh SQLite file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="rtpswitch-bench-statement-"))
    try:
        result = asyncio.run(run(args.entries, args.store, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
