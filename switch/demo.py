"""`rtpswitch demo`: real payments cleared between simulated banks, end to end.

Theory: the demo runs the real engine on a real store (SQLite by default, PostgreSQL with
`--store`) with the in-process transport, and connects one `SimulatedBank` per demo
participant from `config/demo.toml`. It sends N credit transfers with a realistic mix of
outcomes (accepted; paid to an alias the switch resolves; rejected by the creditor bank;
timed out; answered late or twice; duplicates; insufficient position; unknown creditor
agent; unknown alias; over the scheme limit), waits
until every payment has its final status at its debtor bank and every payment the switch
holds is final, and then reports: counts per final status and reason, positions before
and after, and conservation measured three ways (in memory, in the database, and by
replaying the journal). Run it again on the same store (after a crash, say) and it first
finishes what the previous run left open.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from participants.messages import alias_proxy
from simulators import SimulatedBank
from switch.core import PaymentState
from switch.core.money import format_minor, to_minor
from switch.engine import Engine
from switch.iso20022.views import Agent
from switch.ledger import Book, replay
from switch.settings import (
    DemoParticipant,
    Settings,
    load_demo_aliases,
    load_demo_participants,
)
from switch.store.base import Store, open_store
from switch.transport import Delivery, LocalNetwork, Observable, SwitchTransport

SCENARIOS: Final = (
    ("accepted", 60),
    ("alias", 8),
    ("unknown_alias", 2),
    ("creditor_reject", 8),
    ("timeout", 3),
    ("late", 1),
    ("twice", 2),
    ("duplicate", 6),
    ("insufficient", 4),
    ("unknown_agent", 3),
    ("over_limit", 3),
)
"""Scenario mix of the demo, in percent."""

UNKNOWN_AGENT: Final = "BNKZUS33XXX"


class RecordingTransport:
    """Wraps the switch's transport and writes every message in and out to a directory."""

    _TYPE = re.compile(rb"<(?:\w+:)?MsgDefIdr>([a-z]{4}\.\d{3}\.\d{3}\.\d{2})<")

    def __init__(self, inner: SwitchTransport, directory: Path) -> None:
        self._inner = inner
        self._dir = directory
        self._n = 0
        directory.mkdir(parents=True, exist_ok=True)

    def _write(self, direction: str, participant: str, data: bytes) -> None:
        self._n += 1
        m = self._TYPE.search(data)
        mtype = m.group(1).decode() if m else "unusable"
        name = f"{self._n:07d}-{direction}-{participant}-{mtype}.xml"
        (self._dir / name).write_bytes(data)

    async def receive_batch(self, max_items: int, timeout: float) -> list[Delivery]:
        """Receive from the wrapped transport, recording each message."""
        got = await self._inner.receive_batch(max_items, timeout)
        for d in got:
            self._write("in", d.sender, d.data)
        return got

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge through the wrapped transport."""
        await self._inner.ack(deliveries)

    async def send(self, participant: str, data: bytes) -> None:
        """Record, then send through the wrapped transport."""
        self._write("out", participant, data)
        await self._inner.send(participant, data)

    async def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Record each, then send them through the wrapped transport."""
        for participant, data in messages:
            self._write("out", participant, data)
        await self._inner.send_many(messages)

    async def queue_depth(self) -> int | None:
        """The wrapped transport's answer (None if it cannot tell)."""
        if isinstance(self._inner, Observable):
            return await self._inner.queue_depth()
        return None

    async def connected(self, participants: Collection[str]) -> dict[str, bool]:
        """The wrapped transport's answer (all False if it cannot tell)."""
        if isinstance(self._inner, Observable):
            return await self._inner.connected(participants)
        return dict.fromkeys(participants, False)


@dataclass(slots=True)
class Intent:
    """One payment the demo sends, and what the demo expects of it."""

    scenario: str
    debtor: str
    creditor: str | None = None
    account: str | None = None
    uetr: str = ""
    done: float = 0.0
    status: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class DemoReport:
    """What the demo prints."""

    payments: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    by_scenario: dict[str, dict[str, int]]
    positions_before: dict[str, dict[str, str]]
    positions_after: dict[str, dict[str, str]]
    conservation_ok: bool
    conservation: dict[str, Any]
    payments_per_second: float
    seconds: float
    recovered_open_payments: int
    store: str
    engine: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object."""
        return {
            "payments": self.payments,
            "by_status": self.by_status,
            "by_reason": self.by_reason,
            "by_scenario": self.by_scenario,
            "positions": {"before": self.positions_before, "after": self.positions_after},
            "conservation_ok": self.conservation_ok,
            "conservation": self.conservation,
            "payments_per_second": round(self.payments_per_second, 1),
            "seconds": round(self.seconds, 3),
            "recovered_open_payments": self.recovered_open_payments,
            "store": self.store,
            "engine": self.engine,
        }


def _money(minor: int) -> str:
    return format_minor(minor, 2)


def _positions(book: Book) -> dict[str, dict[str, str]]:
    snap = book.snapshot()
    return {
        p: {"available": _money(pos.available), "reserved": _money(pos.reserved)}
        for p, pos in sorted(snap.positions.items())
    }


async def _check_conservation(engine: Engine, store: Store) -> tuple[bool, dict[str, Any]]:
    """Conservation in memory, in the database, by journal replay; no payment settled twice."""
    mem = engine.book.conservation()
    db = await store.conservation()
    journal = await store.journal()
    replayed = replay(journal)
    state = await store.load_state()
    replay_ok = all(
        (replayed.position(p).available, replayed.position(p).reserved)
        == (pos.available, pos.reserved)
        for p, pos in state.positions.items()
    )
    settles = Counter(e.ref for e in journal if e.kind == "settle")
    twice = sum(1 for n in settles.values() if n > 1)
    open_payments = sum(1 for p in state.payments if p.state is PaymentState.FORWARDED)
    ok = mem.ok and db.ok and replay_ok and twice == 0 and open_payments == 0
    return ok, {
        "total_available": _money(db.total_available),
        "total_reserved": _money(db.total_reserved),
        "funded": _money(db.funded),
        "defunded": _money(db.defunded),
        "memory_ok": mem.ok,
        "database_ok": db.ok,
        "journal_replay_ok": replay_ok,
        "payments_settled_twice": twice,
        "open_payments": open_payments,
    }


class Demo:
    """The engine, its store and the simulated banks, wired for one demo run."""

    def __init__(
        self,
        *,
        settings: Settings,
        participants: list[DemoParticipant],
        dump_dir: Path | None = None,
        seed: int | None = None,
        aliases: Sequence[dict[str, str]] = (),
    ) -> None:
        self.settings = settings
        self.participants = participants
        self.alias_rows = list(aliases)
        self.aliases: list[tuple[str, str, str]] = []
        """(type, value, owner) of every active alias the demo may pay."""
        self.rng = random.Random(seed)
        self.network = LocalNetwork()
        transport: SwitchTransport = self.network.switch
        if dump_dir is not None:
            transport = RecordingTransport(transport, dump_dir)
        self.store = open_store(settings.store)
        self.engine = Engine(settings=settings, store=self.store, transport=transport)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.banks: dict[str, SimulatedBank] = {}
        smallest = min(dp.fund for dp in participants)
        self.poor = {
            dp.participant.id
            for dp in participants
            if dp.fund == smallest and dp.fund * 100 < max(d.fund for d in participants)
        }
        for dp in participants:
            p = dp.participant
            self.banks[p.id] = SimulatedBank(
                bicfi=p.id,
                member_id=p.member_id,
                name=p.name,
                channel=self.network.connect(p.id),
                behaviours=dp.accounts,
                response_timeout=settings.response_timeout,
                name_agents_by="USABA" if dp.names_agents_by == "USABA" else "BICFI",
            )

    async def prepare(self) -> int:
        """Migrate, register participants, start the engine, fund a fresh scheme.

        Returns how many payments a previous run left open (they finish in this run).
        """
        await self.store.migrate()
        await self.store.upsert_participants(dp.participant for dp in self.participants)
        await self.engine.start()
        if self.engine.book.funded == 0:
            for dp in self.participants:
                await self.engine.fund(dp.participant.id, to_minor(dp.fund), "demo-opening")
        directory = self.engine.directory
        if self.alias_rows and not len(directory.directory):
            report = await directory.import_rows(self.alias_rows, actor="operator:demo")
            for row in report.errors:
                raise ValueError(f"demo alias row {row.row}: {row.field}: {row.message}")
        self.aliases = [
            (str(a.kind), a.value, a.participant)
            for a in directory.directory.iter_aliases()
            if a.active and a.participant not in self.poor
        ]
        return self.engine.open_payments

    def _agent(self, participant: str) -> Agent:
        bank = self.banks[participant]
        return Agent(bicfi=bank.bicfi, member_id=bank.member_id, clearing_system="USABA")

    def _accounts(self, participant: str, prefix: str) -> list[str]:
        dp = next(d for d in self.participants if d.participant.id == participant)
        return [a for a, b in dp.accounts.items() if b.startswith(prefix)]

    async def _send(self, intent: Intent, sent: dict[str, list[Any]]) -> None:
        """Send the pacs.008 of one intent from its debtor bank."""
        rng = self.rng
        bank = self.banks[intent.debtor]
        # The poorly funded banks only ever pay (and fail to): crediting them would make
        # the insufficient-position scenario depend on timing.
        others = [p for p in self.banks if p != intent.debtor and p not in self.poor]
        creditor = rng.choice(others)
        account: str | None = f"{rng.randrange(10**11, 10**12)}"
        amount = Decimal(rng.randrange(100, 500_000)).scaleb(-2)
        kwargs: dict[str, Any] = {}
        s = intent.scenario
        if intent.creditor is not None:
            creditor, account = intent.creditor, intent.account or account
        if s == "insufficient":
            pos = self.engine.book.position(intent.debtor)
            amount = Decimal(pos.available + 100_00).scaleb(-2)
        elif s == "over_limit":
            amount = self.settings.scheme.payment_limit.to_decimal() + Decimal("0.01")
        elif s == "duplicate":
            earlier = sent.get(intent.debtor)
            if earlier:
                prior = rng.choice(earlier)
                if rng.random() < 0.5:
                    kwargs["msg_id"] = prior.msg_id
                else:
                    kwargs["end_to_end_id"] = prior.end_to_end_id
                    kwargs["tx_id"] = prior.tx_id
            elif any(sent.values()):
                # No earlier payment of this debtor: reuse another bank's UETR.
                kwargs["uetr"] = rng.choice([p for ps in sent.values() for p in ps]).uetr
        agent = Agent(bicfi=UNKNOWN_AGENT) if s == "unknown_agent" else self._agent(creditor)
        if s in ("alias", "unknown_alias"):
            # The debtor bank did not look the alias up: it names the switch as agent.
            rules = self.settings.scheme
            agent = Agent(
                bicfi=rules.switch_bicfi, member_id=rules.switch_member_id, clearing_system="USABA"
            )
            kind, value = "VPA", f"nobody{rng.randrange(10**6)}@bankz"
            mine = [a for a in self.aliases if a[2] != intent.debtor]
            if s == "alias" and mine:
                kind, value, _ = rng.choice(mine)
            kwargs["proxy"] = alias_proxy(kind, value)
            account = None
        pay = await bank.pay(
            creditor_agent=agent, amount=amount, creditor_account=account, **kwargs
        )
        intent.uetr = pay.uetr
        if s == "accepted":
            sent.setdefault(intent.debtor, []).append(pay)

    def plan(self, n: int) -> list[Intent]:
        """N intents in the configured mix, in random order."""
        names = [s for s, _ in SCENARIOS]
        weights = [w for _, w in SCENARIOS]
        debtors = [p for p in self.banks if p not in self.poor]
        poor = sorted(self.poor) or debtors
        intents: list[Intent] = []
        behaviours = {
            "creditor_reject": "reject:",
            "timeout": "silent",
            "late": "late",
            "twice": "twice",
        }
        scripted = {
            s: [(p, a) for p in self.banks for a in self._accounts(p, prefix)]
            for s, prefix in behaviours.items()
        }
        for i in range(n):
            s = names[i] if i < len(names) else self.rng.choices(names, weights)[0]
            creditor = account = None
            if scripted.get(s):
                creditor, account = self.rng.choice(scripted[s])
            pool = poor if s == "insufficient" else debtors
            debtor = self.rng.choice([p for p in pool if p != creditor] or pool)
            intents.append(Intent(scenario=s, debtor=debtor, creditor=creditor, account=account))
        self.rng.shuffle(intents)
        # A duplicate repeats an earlier accepted payment of its debtor: it goes after one.
        seen: set[str] = set()
        ordered: list[Intent] = []
        waiting: list[Intent] = []
        for x in intents:
            if x.scenario == "duplicate" and x.debtor not in seen:
                waiting.append(x)
                continue
            ordered.append(x)
            if x.scenario == "accepted":
                seen.add(x.debtor)
                ordered += [w for w in waiting if w.debtor == x.debtor]
                waiting = [w for w in waiting if w.debtor != x.debtor]
        return ordered + waiting

    async def run(self, n: int, *, keep_running: bool = False) -> DemoReport:
        """Clear `n` payments and report.

        `keep_running`: the engine and the banks stay up after the report (for the
        operator API of `demo --serve`) until `shutdown`.
        """
        recovered = await self.prepare()
        before = _positions(self.engine.book)
        stop = self._stop = asyncio.Event()
        tasks = self._tasks = [asyncio.create_task(self.engine.run(stop))]
        tasks += [asyncio.create_task(b.run()) for b in self.banks.values()]
        finished = False
        try:
            intents = self.plan(n)
            sent: dict[str, list[Any]] = {}
            start = time.perf_counter()
            for i, intent in enumerate(intents):
                await self._send(intent, sent)
                if i % 64 == 63:
                    await asyncio.sleep(0)  # let the engine and the banks run
            wait = self.settings.response_timeout * 2 + 10

            async def final(x: Intent) -> None:
                f = await self.banks[x.debtor].wait_final(x.uetr, wait)
                x.status = f.status if f is not None else "NONE"
                x.reason = f.reason if f is not None else None
                x.done = time.perf_counter()

            await asyncio.gather(*(final(x) for x in intents))
            end = time.perf_counter()
            # Throughput counts the time to clear, not the response timeout waited out.
            cleared = [x.done for x in intents if x.reason != "AB05"]
            clearing_end = max(cleared, default=end)
            deadline = time.monotonic() + wait
            while self.engine.open_payments and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.settings.response_timeout / 5)  # late answers land
            finished = True
        finally:
            if not (keep_running and finished):
                await self._halt()
        ok, cons = await _check_conservation(self.engine, self.store)
        after = _positions(self.engine.book)
        if not keep_running:
            await self.store.close()
        by_scenario: dict[str, Counter[str]] = {}
        for x in intents:
            key = x.status if x.reason is None else f"{x.status} {x.reason}"
            by_scenario.setdefault(x.scenario, Counter())[key or "NONE"] += 1
        st = self.engine.stats
        return DemoReport(
            payments=n,
            by_status=dict(Counter(x.status or "NONE" for x in intents).most_common()),
            by_reason=dict(Counter(x.reason for x in intents if x.reason).most_common()),
            by_scenario={k: dict(v) for k, v in sorted(by_scenario.items())},
            positions_before=before,
            positions_after=after,
            conservation_ok=ok,
            conservation=cons,
            payments_per_second=n / (clearing_end - start),
            seconds=end - start,
            recovered_open_payments=recovered,
            store=self.settings.store.split("@")[-1],
            engine={
                "messages_in": st.messages_in,
                "messages_out": st.messages_out,
                "batches": st.batches,
                "db_transactions": getattr(self.store, "transactions", 0),
                "db_round_trips": getattr(self.store, "round_trips", 0),
            },
        )

    async def _halt(self) -> None:
        self._stop.set()
        for b in self.banks.values():
            b.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop the engine and the banks a `keep_running` run left up, and close the store."""
        await self._halt()
        await self.store.close()


async def run_demo(
    settings: Settings,
    *,
    payments: int,
    dump_dir: Path | None = None,
    participants_file: Path | None = None,
    seed: int | None = None,
) -> DemoReport:
    """Run the demo once and return its report."""
    demo = Demo(
        settings=settings,
        participants=load_demo_participants(participants_file),
        dump_dir=dump_dir,
        seed=seed,
        aliases=load_demo_aliases(participants_file),
    )
    return await demo.run(payments)


@dataclass(frozen=True, slots=True)
class Serving:
    """Where the operator API of `demo --serve` is, and how to sign in."""

    url: str
    token: str
    ca_certificate: Path


async def serve_demo(
    settings: Settings,
    *,
    payments: int,
    api_host: str,
    api_port: int,
    pki_dir: Path,
    stop: asyncio.Event,
    on_ready: Callable[[DemoReport, Serving], None],
    dump_dir: Path | None = None,
    participants_file: Path | None = None,
    seed: int | None = None,
) -> DemoReport:
    """Run the demo, then keep the engine, the banks and the operator API up until `stop`.

    The scheme CA in `pki_dir` is created if there is none (it signs the API's server
    certificate); an admin token is issued for this run and given to `on_ready` with
    the dashboard's address.
    """
    from switch.api.operators import start_operator_api
    from switch.operations import Role
    from switch.operator_service import OperatorService
    from switch.security.pki import SchemeCA

    demo = Demo(
        settings=settings,
        participants=load_demo_participants(participants_file),
        dump_dir=dump_dir,
        seed=seed,
        aliases=load_demo_aliases(participants_file),
    )
    service = OperatorService(demo.engine)
    await service.start()  # the dashboard's charts show the run itself
    try:
        report = await demo.run(payments, keep_running=True)
        try:
            ca = SchemeCA.init(pki_dir)
            _, token = await service.create_token("demo-admin", Role.ADMIN, None)
            server = await start_operator_api(
                service, pki_dir=pki_dir, host=api_host, port=api_port
            )
            try:
                on_ready(report, Serving(f"{server.url}/dashboard", token, ca.ca_cert_path))
                await stop.wait()
            finally:
                await server.stop()
        finally:
            await demo.shutdown()
    finally:
        await service.stop()
    return report


def render(report: DemoReport) -> str:
    """The report for people."""
    lines = [
        f"Cleared {report.payments} payments in {report.seconds:.2f} s on {report.store}: "
        f"{report.payments_per_second:.0f} payments/s (timeouts waited out excluded)",
    ]
    if report.recovered_open_payments:
        lines.append(f"Finished {report.recovered_open_payments} payments left open earlier")
    lines.append("Final status at the debtor bank:")
    lines += [f"  {k:<6} {v:>7}" for k, v in report.by_status.items()]
    lines.append("Reject reasons:")
    lines += [f"  {k:<6} {v:>7}" for k, v in report.by_reason.items()]
    lines.append("By scenario:")
    for k, v in report.by_scenario.items():
        lines.append(f"  {k:<16} " + ", ".join(f"{s}: {n}" for s, n in v.items()))
    lines.append("Positions (available / reserved), before -> after:")
    for p, after in report.positions_after.items():
        b = report.positions_before.get(p, {"available": "0.00", "reserved": "0.00"})
        lines.append(
            f"  {p}  {b['available']:>14} / {b['reserved']:>10}  ->  "
            f"{after['available']:>14} / {after['reserved']:>10}"
        )
    c = report.conservation
    verdict = "holds" if report.conservation_ok else "BROKEN"
    lines.append(
        f"Conservation {verdict}: available {c['total_available']} + reserved "
        f"{c['total_reserved']} = funded {c['funded']} - defunded {c['defunded']}; "
        f"journal replay {'matches' if c['journal_replay_ok'] else 'DIFFERS'}; "
        f"{c['payments_settled_twice']} payments settled twice; {c['open_payments']} open"
    )
    return "\n".join(lines)
