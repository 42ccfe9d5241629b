"""`rtpswitch simulate`: one simulated bank as a process of its own, on the real network.

Theory of operation. The bank is a `SimulatedBank` (the scripted bank of the demo and
the load generator) over a `participants.connector.BankConnector`: it connects to the
broker with its own TLS certificate, signs every message it sends with its own signing
key and acts only on messages that verify as signed by the switch (RULEBOOK §6). As
creditor agent it answers each forwarded pacs.008 as the behaviour configured for the
credited account says (the `accounts` table of the bank in the participants file:
accept -> ACSP, reject:CODE -> RJCT CODE, late, silent, twice; accept for any other
account). With `--pay N --to BANK` it is also debtor agent: it sends N credit
transfers, spread over the banks named, and records the switch's final status of each.

It runs until SIGTERM or SIGINT, or for `--seconds`, or (with `--pay` and no
`--seconds`) until every payment it sent has its final status. Stopping is graceful: no
new payment is started, the message being handled is finished and answered, the last
message taken from the queue is acknowledged (one taken but not handled goes back to
the queue), and the connection is closed. Answers still waiting to be sent `late` are
dropped. Then a JSON report goes to stdout; progress and refusals go to stderr.

Exit status: 0 stopped as asked; 1 the broker could not be reached, the connection was
lost for good, or payments were left without a final status when waiting for them was
what ended the run; 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported when the command runs: `rtpswitch` starts fast
    from participants.connector import BankConnector
    from simulators.bank import SentPayment, SimulatedBank
    from switch.iso20022.views import Agent
    from switch.settings import DemoParticipant, Settings

__all__ = ["END_TO_END_SECONDS", "SimulationReport", "register", "run", "simulate"]

log = logging.getLogger(__name__)

_PROG: Final = "rtpswitch simulate"
END_TO_END_SECONDS: Final = 20.0
"""The scheme's end-to-end clock (RULEBOOK §3): how long a payment waits for its final."""
_GRACE: Final = 10.0
"""How long stopping waits for the message being handled and a payment being sent."""
_BICFI: Final = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_MEMBER_ID: Final = re.compile(r"[0-9]{9}")


class _BadInput(Exception):
    """A bad option: one line naming it (exit status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Origination:
    """The payments the bank sends: `count` of `amount`, round robin over `creditors`."""

    count: int
    creditors: tuple[Agent, ...]
    amount: Decimal
    account: str | None = None
    """None: the simulated banks' default creditor account."""
    rate: float | None = None
    """Payments per second (None: one after the other, as fast as the broker confirms)."""


@dataclass(slots=True, kw_only=True)
class SimulationReport:
    """What the simulated bank did, printed as JSON when it stops."""

    bank: str
    ended_by: str
    seconds: float
    counters: dict[str, int]
    connector: dict[str, int]
    refused: list[dict[str, str]]
    payments_sent: int = 0
    finals: dict[str, int] | None = None
    pending: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object."""
        out: dict[str, Any] = {
            "bank": self.bank,
            "ended_by": self.ended_by,
            "seconds": round(self.seconds, 3),
            "counters": self.counters,
            "connector": self.connector,
            "refused": self.refused,
        }
        if self.finals is not None:
            out["payments"] = {
                "sent": self.payments_sent,
                "final": self.finals,
                "pending": self.pending,
            }
        if self.error is not None:
            out["error"] = self.error
        return out


def _agent(text: str, banks: dict[str, DemoParticipant]) -> Agent:
    """The creditor agent `text` names: a participant of the file, or any BICFI/member id."""
    from switch.iso20022.views import USABA, Agent

    key = text.strip().upper()
    for dp in banks.values():
        p = dp.participant
        if key in (p.id, p.member_id):
            return Agent(bicfi=p.id, member_id=p.member_id, clearing_system=USABA)
    if _BICFI.fullmatch(key):
        return Agent(bicfi=key)
    if _MEMBER_ID.fullmatch(key):
        return Agent(member_id=key, clearing_system=USABA)
    raise _BadInput(f"--to {text}: neither a participant of the file, a BICFI nor a member id")


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _BadInput(f"--amount {text}: not a decimal amount") from None
    if not value.is_finite() or value <= 0:
        raise _BadInput(f"--amount {text}: must be a positive amount")
    return value


async def _originate(
    bank: SimulatedBank, plan: Origination, sent: list[SentPayment], stop: asyncio.Event
) -> None:
    """Send the payments of `plan` (appending each to `sent`) until done or `stop`."""
    interval = 1.0 / plan.rate if plan.rate else 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(plan.count):
        if stop.is_set():
            return
        if interval:
            delay = start + i * interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
        creditor = plan.creditors[i % len(plan.creditors)]
        payment = await bank.pay(
            creditor_agent=creditor, amount=plan.amount, creditor_account=plan.account
        )
        sent.append(payment)


async def _all_final(
    bank: SimulatedBank, payer: asyncio.Task[None], sent: list[SentPayment], wait: float
) -> None:
    """Return once the payer is done and every payment sent has its final (or `wait` passed
    for it)."""
    await asyncio.shield(payer)
    from simulators.bank import Role

    await asyncio.gather(*(bank.wait_final(p.uetr, wait, Role.DEBTOR) for p in sent))


async def simulate(
    settings: Settings,
    me: DemoParticipant,
    *,
    seconds: float | None = None,
    origination: Origination | None = None,
    stop: asyncio.Event | None = None,
    connector: BankConnector | None = None,
) -> SimulationReport:
    """Run the simulated bank `me` until `stop` is set (or `seconds`, or its payments are
    final), then stop gracefully and report. `connector` defaults to `connect(...)`."""
    from participants.connector import connect
    from simulators.bank import Role, SimulatedBank
    from switch.iso20022.views import USABA, Agent

    stop = stop or asyncio.Event()
    started = time.monotonic()
    p = me.participant
    if connector is None:
        connector = await connect(settings, p.id)
    scheme = settings.scheme
    bank = SimulatedBank(
        bicfi=p.id,
        member_id=p.member_id,
        name=p.name,
        channel=connector,
        behaviours=me.accounts,
        response_timeout=settings.response_timeout,
        switch=Agent(
            bicfi=scheme.switch_bicfi, member_id=scheme.switch_member_id, clearing_system=USABA
        ),
        name_agents_by="USABA" if me.names_agents_by == "USABA" else "BICFI",
    )
    runner = asyncio.create_task(bank.run(), name=f"{p.id} receiving")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    watch: dict[asyncio.Task[Any], str] = {stopping: "signal", runner: "receiving ended"}
    timer: asyncio.Task[None] | None = None
    if seconds is not None:
        timer = asyncio.create_task(asyncio.sleep(seconds), name="seconds")
        watch[timer] = "seconds"
    sent: list[SentPayment] = []
    payer: asyncio.Task[None] | None = None
    finals: asyncio.Task[None] | None = None
    if origination is not None:
        payer = asyncio.create_task(_originate(bank, origination, sent, stop), name="paying")
        watch[payer] = "error"  # ends the run only by failing (see below)
        if seconds is None:
            wait = END_TO_END_SECONDS + settings.response_timeout
            finals = asyncio.create_task(_all_final(bank, payer, sent, wait), name="finals")
            watch[finals] = "payments"
    print(
        f"{_PROG}: {p.id} ({p.name}) connected; answering forwarded payments "
        f"(accounts: {json.dumps(me.accounts) if me.accounts else 'accept all'})"
        + (f"; sending {origination.count} payments" if origination else ""),
        file=sys.stderr,
        flush=True,
    )
    error: str | None = None
    ended_by = "error"
    try:
        pending = set(watch)
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                error = f"{type(exc).__name__}: {exc}"
                break
            if done - {payer}:  # the payer ending well ends nothing by itself
                ended_by = next(watch[t] for t in watch if t in done and t is not payer)
                break
        print(f"{_PROG}: {p.id} stopping ({ended_by})", file=sys.stderr, flush=True)
    finally:
        stop.set()
        for task in (stopping, timer, finals):
            if task is not None:
                task.cancel()
        if payer is not None:
            # finishes the payment being sent (it checks `stop` before each one)
            try:
                await asyncio.wait_for(asyncio.shield(payer), _GRACE)
            except TimeoutError:
                payer.cancel()
            except Exception as exc:
                error = error or f"{type(exc).__name__}: {exc}"
        bank.stop()
        try:
            await asyncio.wait_for(asyncio.shield(runner), _GRACE)
        except TimeoutError:
            runner.cancel()
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {exc}"
        await connector.close()
    report = SimulationReport(
        bank=p.id,
        ended_by=ended_by,
        seconds=time.monotonic() - started,
        counters=dict(sorted(bank.counters.items())),
        connector=dict(sorted(connector.counters.items())),
        refused=[{"code": r.code, "reason": r.reason} for r in list(connector.rejected)[-20:]],
        error=error,
    )
    if origination is not None:
        outcome: Counter[str] = Counter()
        for payment in sent:
            final = bank.final(payment.uetr, Role.DEBTOR)
            if final is None:
                report.pending += 1
            else:
                outcome[final.status + (f" {final.reason}" if final.reason else "")] += 1
        report.payments_sent = len(sent)
        report.finals = dict(sorted(outcome.items()))
    return report


def run(args: argparse.Namespace) -> int:
    """Run `rtpswitch simulate` with the parsed options."""
    from switch.security.pki import PkiError
    from switch.settings import SettingsError, load_demo_participants, load_settings
    from switch.transport.amqp import AmqpTransportError

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
        banks = {
            dp.participant.id: dp
            for dp in load_demo_participants(
                args.participants or settings.service.participants,
                exponent=settings.scheme.exponent,
            )
        }
        bank_id = args.bank.strip().upper()
        me = banks.get(bank_id)
        if me is None:
            raise _BadInput(
                f"--bank {args.bank}: not a participant of the participants file "
                f"({', '.join(sorted(banks))})"
            )
        if args.seconds is not None and args.seconds <= 0:
            raise _BadInput("--seconds must be positive")
        origination = None
        if args.pay:
            if args.pay < 0:
                raise _BadInput("--pay must be 0 or more")
            if not args.to:
                raise _BadInput("--pay needs at least one --to BANK")
            if args.rate is not None and args.rate <= 0:
                raise _BadInput("--rate must be positive")
            origination = Origination(
                count=args.pay,
                creditors=tuple(_agent(t, banks) for t in args.to),
                amount=_amount(args.amount),
                account=args.account,
                rate=args.rate,
            )
        elif args.to:
            raise _BadInput("--to is for the payments of --pay N")
    except (SettingsError, _BadInput, ValueError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_main(settings, me, args.seconds, origination))
    except PkiError as exc:
        print(f"{_PROG}: --bank {me.participant.id}: {exc}", file=sys.stderr)
        return 2
    except (AmqpTransportError, OSError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    json.dump(report.as_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if report.error is not None:
        print(f"{_PROG}: {report.error}", file=sys.stderr)
        return 1
    if report.ended_by == "payments" and report.pending:
        print(f"{_PROG}: {report.pending} payments without a final status", file=sys.stderr)
        return 1
    return 0


async def _main(
    settings: Settings,
    me: DemoParticipant,
    seconds: float | None,
    origination: Origination | None,
) -> SimulationReport:
    """`simulate` with SIGTERM and SIGINT as the stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        return await simulate(settings, me, seconds=seconds, origination=origination, stop=stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def register(sub: Any) -> None:
    """Add the `simulate` sub-command."""
    p = sub.add_parser(
        "simulate",
        help="run one simulated bank over the mutual-TLS queues",
        description="Run a simulated bank of the participants file as a process of its own: "
        "it answers forwarded payments as its accounts' behaviours say and, with --pay, "
        "sends payments too. Stops on SIGTERM/SIGINT, after --seconds, or (with --pay "
        "alone) once its payments are final; prints a JSON report.",
    )
    p.add_argument("--config", type=Path, help="switch configuration (TOML)")
    p.add_argument("--bank", required=True, metavar="ID", help="the participant to simulate")
    p.add_argument(
        "--participants",
        type=Path,
        metavar="FILE",
        help="participants and behaviours (default: service.participants of --config)",
    )
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--pay", type=int, default=0, metavar="N", help="send N credit transfers")
    p.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="BANK",
        help="creditor agent of the payments (BICFI or member id; repeat to spread them)",
    )
    p.add_argument("--amount", default="1.00", help="amount of each payment (default 1.00)")
    p.add_argument(
        "--account",
        help="creditor account (default: the simulated banks' default account, which "
        "accepts; a behaviour account of the creditor bank makes it answer as configured)",
    )
    p.add_argument("--rate", type=float, metavar="R", help="payments per second (default: max)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.set_defaults(run=run)
