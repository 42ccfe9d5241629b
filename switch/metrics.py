"""Prometheus metrics of the switch (prometheus-client, the process's default registry).

Metrics are counted where the thing happens (the engine, the API) and read by whoever
exposes the registry. They are process-wide: two engines in one process (tests) add up.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

ALIAS_LOOKUPS: Final = Counter(
    "rtpswitch_alias_lookups_total",
    "Alias lookups answered, by channel (queue: acmt.023, api: the banks' HTTPS API) and "
    "outcome (found, not_found, refused: a token bucket was empty)",
    ["channel", "outcome"],
)
"""Anti-enumeration (RULEBOOK §5): `outcome="refused"` counts the lookups refused."""
