"""Fixed-bucket histograms for the engine's hot path (pure: no I/O, no Prometheus).

The engine observes into these with plain Python (one bisect and three integer or float
updates per observation); `switch.metrics` turns them into Prometheus histograms at
scrape time. Buckets are cumulative in the Prometheus sense only when read: an
observation `v` is counted once, in the first bucket whose upper bound is >= `v`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Final

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) for end-to-end payment latency: 0.5 ms to 30 s."""

STAGE_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds (seconds) for one stage of one batch (read, decide, commit, send)."""

BATCH_SIZE_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
"""Upper bounds for the number of deliveries in one committed batch."""


class LatencyHistogram:
    """Counts of observations per fixed bucket, with their count and sum.

    `bounds` are the finite upper bounds, strictly increasing; the implicit last bucket
    (+Inf) takes whatever is above the last bound. Not thread-safe: one event loop
    observes, and a scrape on the same loop reads.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        b = tuple(float(x) for x in bounds)
        if not b:
            raise ValueError("a histogram needs at least one bucket bound")
        if any(hi <= lo for lo, hi in pairwise(b)):
            raise ValueError(f"bucket bounds must be strictly increasing: {b}")
        if b[-1] == float("inf"):
            raise ValueError("+Inf is implicit: do not list it as a bound")
        self.bounds: tuple[float, ...] = b
        self.counts: list[int] = [0] * (len(b) + 1)
        """Per bucket (not cumulative); the last one is +Inf."""
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count `value` in the first bucket whose upper bound is >= `value`."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for each bound, then (+Inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def percentiles(samples: Sequence[float], ranks: Iterable[float]) -> list[float | None]:
    """The nearest-rank percentile of `samples` for each of `ranks` (0 < rank <= 100).

    Exact, for a bounded window of recent samples (EngineStats.recent_latencies); None
    for every rank when there are no samples.
    """
    wanted = list(ranks)
    if not samples:
        return [None] * len(wanted)
    ordered = sorted(samples)
    n = len(ordered)
    out: list[float | None] = []
    for rank in wanted:
        if not 0 < rank <= 100:
            raise ValueError(f"percentile rank must be in (0, 100]: {rank}")
        index = max(0, min(n - 1, -(-rank * n // 100) - 1))
        out.append(ordered[int(index)])
    return out
