"""Prometheus metrics of the switch (prometheus-client).

Two kinds. Counters that other parts of the switch increment as things happen live in
the process's default registry (`ALIAS_LOOKUPS`); they are process-wide, so two engines
in one process (tests) add up. The engine's own numbers are plain Python in
`EngineStats` (cheap on the clearing path) and become Prometheus families only when
scraped, through `EngineCollector`; transport figures (queue depth, who is connected)
are asked of the transport first, since those calls are asynchronous and a collector's
`collect` is not. `render_metrics` does both and renders one exposition: the engine's
families, then the default registry's (alias lookups, process and platform metrics).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from switch.latency import LatencyHistogram, percentiles
from switch.transport.base import Observable

if TYPE_CHECKING:
    from switch.engine import Engine

__all__ = [
    "ALIAS_LOOKUPS",
    "BATCH_FILES",
    "STATEMENTS",
    "EngineCollector",
    "LatencyHistogram",
    "TransportView",
    "percentiles",
    "render_metrics",
]

ALIAS_LOOKUPS: Final = Counter(
    "rtpswitch_alias_lookups_total",
    "Alias lookups answered, by channel (queue: acmt.023, api: the banks' HTTPS API) and "
    "outcome (found, not_found, refused: a token bucket was empty)",
    ["channel", "outcome"],
)
"""Anti-enumeration (RULEBOOK §5): `outcome="refused"` counts the lookups refused."""

BATCH_FILES: Final = Counter(
    "rtpswitch_batch_files_total",
    "Batch files answered (RULEBOOK §7), by outcome (cleared: every transaction decided "
    "and the status file delivered; refused: the file as a whole) and refusal reason",
    ["outcome", "reason"],
)
STATEMENTS: Final = Counter(
    "rtpswitch_statements_total",
    "End-of-day statements (camt.053), by outcome (delivered and recorded; not_made: the "
    "day's journal changed while it was written, made again at the next look)",
    ["outcome"],
)


@dataclass(slots=True)
class TransportView:
    """What the transport said at the start of a scrape."""

    queue_depth: int | None = None
    """Messages waiting for the switch; None when the transport cannot tell."""
    connected: dict[str, bool] = field(default_factory=dict)
    """By participant id: a consumer on its queue (AMQP) or a channel (in process)."""


class EngineCollector(Collector):
    """The engine's statistics, positions and transport view as Prometheus families.

    `collect` reads `engine.stats` and `engine.book` when called (on the engine's event
    loop: nothing here locks) and the transport view of the last `refresh`.
    """

    def __init__(self, engine: Engine, transport: object) -> None:
        self.engine = engine
        self.transport = transport
        self.view = TransportView()

    async def refresh(self, participants: Collection[str] | None = None) -> TransportView:
        """Ask the transport for its depth and who of `participants` is connected.

        `participants` defaults to every participant the engine knows. A transport that
        is not `Observable`, or that fails, leaves the depth unknown and nobody connected;
        nothing here raises into a scrape.
        """
        ids = list(self.engine.ctx.directory) if participants is None else list(participants)
        view = TransportView(connected=dict.fromkeys(ids, False))
        transport = self.transport
        if isinstance(transport, Observable):
            try:
                view.queue_depth = await transport.queue_depth()
            except Exception:  # a scrape reports what it can
                view.queue_depth = None
            try:
                answered = await transport.connected(ids)
            except Exception:
                answered = {}
            for p in ids:
                view.connected[p] = bool(answered.get(p, False))
        self.view = view
        return view

    def collect(self) -> Iterator[Metric]:
        """Build every family now, from the engine's current numbers."""
        engine = self.engine
        stats = engine.stats

        messages_in = CounterMetricFamily(
            "rtpswitch_messages_in",
            "Messages received from participants, by message type (unknown: unusable)",
            labels=["type"],
        )
        for mtype, n in sorted(stats.messages_in_by_type.items()):
            messages_in.add_metric([mtype], n)
        yield messages_in

        messages_out = CounterMetricFamily(
            "rtpswitch_messages_out",
            "Messages the switch sent to participants, by message type",
            labels=["type"],
        )
        for mtype, n in sorted(stats.messages_out_by_type.items()):
            messages_out.add_metric([mtype], n)
        yield messages_out

        payments = CounterMetricFamily(
            "rtpswitch_payments",
            "Payments that reached a final state, by state (settled, rejected, timed_out) "
            "and reason code (empty when settled)",
            labels=["state", "reason"],
        )
        for (state, reason), n in sorted(stats.finals.items()):
            payments.add_metric([state, reason], n)
        yield payments

        yield CounterMetricFamily(
            "rtpswitch_duplicates",
            "Credit transfers rejected DUPL (message id, UETR or end-to-end id already used)",
            value=stats.duplicates,
        )

        signature = CounterMetricFamily(
            "rtpswitch_signature_failures",
            "Messages refused for their signature, by reason (DS0B, DS0C, DS0D)",
            labels=["reason"],
        )
        for reason, n in sorted(stats.signature_failures.items()):
            signature.add_metric([reason], n)
        yield signature

        yield CounterMetricFamily(
            "rtpswitch_timeouts",
            "Payments rejected AB05 because the creditor agent did not answer in time",
            value=stats.timed_out,
        )
        yield CounterMetricFamily(
            "rtpswitch_engine_batches",
            "Batches the engine committed, sent and acknowledged",
            value=stats.batches,
        )
        yield GaugeMetricFamily(
            "rtpswitch_batch_backlog",
            "Transactions of batch files waiting for the engine (real-time traffic goes first)",
            value=engine.batch_backlog,
        )
        yield GaugeMetricFamily(
            "rtpswitch_in_flight_payments",
            "Payments forwarded to the creditor agent and waiting for its answer",
            value=stats.in_flight,
        )

        scheme = engine.settings.scheme
        scale = 10**scheme.exponent
        available = GaugeMetricFamily(
            "rtpswitch_position_available",
            f"Available settlement position by participant, in {scheme.currency}",
            labels=["participant"],
        )
        reserved = GaugeMetricFamily(
            "rtpswitch_position_reserved",
            f"Settlement position reserved for payments in flight by participant, in "
            f"{scheme.currency}",
            labels=["participant"],
        )
        for participant, position in sorted(engine.book.snapshot().positions.items()):
            available.add_metric([participant], position.available / scale)
            reserved.add_metric([participant], position.reserved / scale)
        yield available
        yield reserved

        latency = HistogramMetricFamily(
            "rtpswitch_payment_latency_seconds",
            "Seconds from a payment's arrival to its final decision (settled, rejected or "
            "timed out), as the engine's batches saw them",
        )
        _add_histogram(latency, [], stats.end_to_end)
        yield latency

        stages = HistogramMetricFamily(
            "rtpswitch_stage_latency_seconds",
            "Seconds one batch spent in each stage: read (parse, validate, verify), decide, "
            "commit (sign and store), send (acknowledge and send)",
            labels=["stage"],
        )
        for stage, histogram in (
            ("read", stats.stage_read),
            ("decide", stats.stage_decide),
            ("commit", stats.stage_commit),
            ("send", stats.stage_send),
        ):
            _add_histogram(stages, [stage], histogram)
        yield stages

        batch_size = HistogramMetricFamily(
            "rtpswitch_batch_size",
            "Deliveries per committed batch (0: due deadlines or notices only)",
        )
        _add_histogram(batch_size, [], stats.batch_size)
        yield batch_size

        view = self.view
        if view.queue_depth is not None:
            yield GaugeMetricFamily(
                "rtpswitch_queue_depth",
                "Messages waiting for the switch on its inbound queue",
                value=view.queue_depth,
            )
        connected = GaugeMetricFamily(
            "rtpswitch_participant_connected",
            "1 when the participant is connected to receive from the switch, else 0",
            labels=["participant"],
        )
        for participant, up in sorted(view.connected.items()):
            connected.add_metric([participant], 1.0 if up else 0.0)
        yield connected


def _add_histogram(
    family: HistogramMetricFamily, labels: list[str], histogram: LatencyHistogram
) -> None:
    buckets = [
        ("+Inf" if bound == math.inf else repr(bound), float(n))
        for bound, n in histogram.cumulative()
    ]
    family.add_metric(labels, buckets, histogram.sum)


async def render_metrics(
    engine: Engine, transport: object, participants: Collection[str] | None = None
) -> tuple[bytes, str]:
    """The exposition of a scrape: (body, content type) in the Prometheus text format.

    Asks the transport first (see `EngineCollector.refresh`), then renders the engine's
    families from a fresh registry followed by the process's default registry.
    """
    collector = EngineCollector(engine, transport)
    await collector.refresh(participants)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry) + generate_latest(REGISTRY), CONTENT_TYPE_LATEST
