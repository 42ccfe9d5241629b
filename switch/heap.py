"""The collector's settings for a long-running clearing process (engine or reader).

The engine and its reader processes allocate a few hundred thousand short-lived objects a
second (views, outbound messages, rows), and most of what a batch allocates lives until
the batch is committed: tens of milliseconds. With CPython's default thresholds (a young
collection every 700 allocations net) nearly all of it is examined while still alive,
survives into the older generations and is walked again there; in a closed-loop engine
benchmark the collector took about 1.4 s of CPU in a 10 s run. With a young threshold
of 50,000 most of a batch has been freed by reference counting before the collector
looks, and the same run spent about 0.2 s in it. What still survives is what the engine
keeps (payments in flight and the most recent final ones). How often and how long the
passes are depends on the machine: on the Xeon development machine a 10 s run had 5
young passes of 20-35 ms each; on a 2-core AMD EPYC, clearing some 3,700 payments/s, 104
young passes of ~1.8 ms, 8 middle ones and 1 full one of 10 ms (0.2 s in all), against a
dozen full and a hundred middle ones before. A full collection comes after ten middle
ones (some ten million net allocations: in the latter run, about every 25 s), and walks
everything allocated since start-up.

What is alive when a process has started (modules, compiled schemas, the state rebuilt
from the store) stays for the life of the process: it is frozen out of the collector's
passes, so a full pass does not walk it (each such pass stops the event loop).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 50_000
"""Net allocations between two collections of the youngest generation."""
OLDER_THRESHOLDS: Final = (20, 10)
"""Young collections per middle one, middle collections per full one."""


def settle() -> None:
    """Collect once, freeze what is alive, and set the collector's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
