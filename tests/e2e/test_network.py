"""The switch as a network node, end to end: four simulated banks, two switch processes,
RabbitMQ over mutual TLS, PostgreSQL.

Everything runs as it is deployed: `rtpswitch run` twice (one clears, one stands by),
`rtpswitch simulate` once per bank and phase, all of them separate processes talking
through the project's broker with their own certificates and signing keys. In isolation
from other runs on the same broker and server (see `tests.e2e.network`): a vhost, a
database and a configuration of the test's own.

The workload comes in two phases, every bank paying and answering in both:

1. (the leader is killed with SIGKILL half-way) normal payments; rejects by the
   creditor's account (AC04); an unknown creditor agent (RC04); creditor agents that
   answer too late (LATE: AB05, the late answer refused) or never (SILENT: AB05). The
   standby must take over and every payment still reach its final status.
2. (on the new leader) rejects AC03 and AC06, a creditor that answers twice (TWICE: ACSC,
   the second answer refused), and Bank D (funded 1000.00) paying more than it has (AM04).

Then: the ledger check holds, no payment settled twice, the database agrees with what the
banks were told; a certificate from another CA cannot connect, a bank cannot read another
bank's queue, and a pacs.008 whose debtor agent is another bank is refused RC01 and moves
no money.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from participants.connector import connect
from participants.messages import SWITCH, business_date, credit_transfer, envelope
from switch.deploy.bringup import Plan, provision_broker
from switch.deploy.broker import BrokerError, BrokerNode
from switch.iso20022 import views
from switch.iso20022.parse import parse
from switch.iso20022.registry import MessageType
from switch.iso20022.views import Agent
from switch.security.pki import SchemeCA, load_credentials
from switch.settings import Settings, load_settings
from switch.store.base import open_store
from switch.store.testing import ensure_test_database, reset_database
from switch.transport.amqp import (
    AmqpConnectError,
    AmqpParticipantChannel,
    AmqpRefused,
)
from switch.transport.amqp import connect as amqp_connect
from tests.e2e.network import (
    BANKS,
    BROKER_DIR,
    DATABASE,
    PKI,
    SWITCH_ID,
    UNKNOWN,
    VHOST,
    A,
    B,
    C,
    D,
    Payments,
    Proc,
    Report,
    amqp,
    drop_vhost,
    ensure_vhost,
    one_run_at_a_time,
    purge_all,
    run_async,
    simulate,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEADER = "clearing as leader"
STANDBY = "standing by"
PHASE1_SECONDS = 12.0
"""Long enough for the last payment of phase 1 (sent ~3 s in), a take-over (~1 s) and
a late answer (response timeout + 1 s) after it."""
PHASE2_SECONDS = 6.0
KILL_AFTER = 1.0
"""Seconds after the phase-1 banks are connected (their payments are flowing)."""

PHASE1 = {
    A: Payments(9, (B, C, UNKNOWN), account="AC04-000001", rate=3),  # AC04, ACSC, RC04
    B: Payments(8, (C, A), account="LATE-000001", rate=3),  # AB05 (late at C), ACSC
    C: Payments(8, (A, B), account="SILENT-0001", rate=3),  # AB05 (silent at A), ACSC
    D: Payments(6, (A, C), amount="50.00", rate=3),  # ACSC
}
PHASE1_ALLOWED = {
    A: {"ACSC", "RJCT AC04", "RJCT RC04", "RJCT AB05"},
    B: {"ACSC", "RJCT AB05"},
    C: {"ACSC", "RJCT AB05"},
    D: {"ACSC", "RJCT AB05"},
}
"""AB05 is also what a payment caught in flight by the take-over may end with."""
PHASE2 = {
    A: Payments(4, (C, B), account="AC06-000001"),  # AC06 at C, ACSC at B
    B: Payments(6, (A, C, D), account="AC03-000001"),  # AC03 at A, ACSC at C and D
    C: Payments(4, (B, A), account="TWICE-00001"),  # B answers twice: ACSC; ACSC at A
    D: Payments(4, (B,), amount="400.00"),  # as long as D has 400.00: ACSC, then AM04
}
FINAL_STATES = {"settled", "rejected", "timed_out"}


@dataclass(frozen=True)
class Network:
    plan: Plan
    node: BrokerNode
    store: str
    config: Path
    settings: Settings
    workdir: Path

    def vhost(self) -> None:
        """This test's vhost as it must be (a bring-up meanwhile clears its permissions)."""
        ensure_vhost(self.node, self.plan.participants, self.workdir)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The broker (bring-up, then this test's vhost, emptied), the test's database (reset
    and migrated) and a switch configuration naming them; one run at a time."""
    with one_run_at_a_time():
        try:
            plan, node, _ = provision_broker(pki_dir=PKI, broker_dir=BROKER_DIR)
        except BrokerError as exc:
            pytest.fail(f"cannot bring up the RabbitMQ node: {exc}", pytrace=False)
        assert plan.switch_id == SWITCH_ID and set(BANKS) <= set(plan.participants)
        workdir = tmp_path_factory.mktemp("network")
        try:
            ensure_vhost(node, plan.participants, workdir)
            try:
                url = run_async(ensure_test_database(DATABASE))
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                pytest.fail(f"PostgreSQL is unreachable: {problem}", pytrace=False)
            run_async(reset_database(url))
            run_async(_migrate(url))
            run_async(purge_all(plan.participants))
            config = write_config(workdir / "switch.toml", url)
            yield Network(plan, node, url, config, load_settings(config), workdir)
        finally:
            drop_vhost(node)


async def _migrate(url: str) -> None:
    store = open_store(url)
    try:
        await store.migrate()
    finally:
        await store.close()


# --- the test -------------------------------------------------------------------------------


def test_four_banks_two_switches_clear_a_mixed_workload_through_a_crash(
    network: Network,
) -> None:
    net = network
    procs: list[Proc] = []
    try:
        # The broker's own refusals need no switch.
        run_async(_impostor_cannot_connect(net.workdir))
        run_async(_bank_cannot_read_another_banks_queue())

        # 1. Two switch processes: one clears, the other stands by.
        run = ["run", "--config", str(net.config)]
        switches = [Proc.start(f"switch{i}", run, net.workdir) for i in (1, 2)]
        procs += switches
        wait_until("a leader", lambda: any(s.has_said(LEADER) for s in switches), switches, 30)
        leader = next(s for s in switches if s.has_said(LEADER))
        standby = next(s for s in switches if s is not leader)
        where = f"{LEADER} on amqps://127.0.0.1:5671/{VHOST}"
        assert leader.has_said(where), (
            f"the switch must clear on the configured vhost {VHOST} (service.amqp_vhost):\n"
            + leader.tail()
        )
        wait_until("a standby", lambda: standby.has_said(STANDBY), switches, 30)

        # 2-3. Phase 1: four banks pay and answer; the leader dies half-way.
        phase1 = _start_phase(net, "phase1", PHASE1, PHASE1_SECONDS, procs)
        time.sleep(KILL_AFTER)
        leader.crash()
        assert leader.popen.returncode == -9
        wait_until("the standby to take over", lambda: standby.has_said(LEADER), [standby], 30)
        assert standby.has_said(where)
        reports1 = _reports(phase1, PHASE1_SECONDS + 20)
        for bank, report in reports1.items():
            assert report.sent == PHASE1[bank].count, report.data
            assert report.pending == 0, f"{bank}: payments without a final status {report.data}"
            assert set(report.finals) <= PHASE1_ALLOWED[bank], report.data
            assert report.data["refused"] == [], report.data  # every message verified
        assert reports1[A].finals["RJCT RC04"] == 3, reports1[A].data
        assert reports1[A].finals["RJCT AC04"] >= 1, reports1[A].data
        assert reports1[A].finals["ACSC"] >= 1, reports1[A].data
        # LATE at C: 4 of B's payments time out, whatever the take-over; C's late answer
        # to each is refused (admi.002) and changes nothing.
        assert reports1[B].finals["RJCT AB05"] >= 4, reports1[B].data
        assert reports1[C].counter("late") == 4, reports1[C].data
        assert reports1[C].counter("rejects") == 4, reports1[C].data
        # SILENT at A: 4 of C's payments time out.
        assert reports1[C].finals["RJCT AB05"] >= 4, reports1[C].data
        assert reports1[A].counter("silent") == 4, reports1[A].data

        # Phase 2, on the new leader: every outcome is known in advance.
        d_available = run_async(_positions(net.store))[D][0]
        phase2 = _start_phase(net, "phase2", PHASE2, PHASE2_SECONDS, procs)
        reports2 = _reports(phase2, PHASE2_SECONDS + 20)
        d_settles = min(4, d_available // 400_00)
        expected = {
            A: Counter({"ACSC": 2, "RJCT AC06": 2}),
            B: Counter({"ACSC": 4, "RJCT AC03": 2}),
            C: Counter({"ACSC": 4}),
            D: +Counter({"ACSC": d_settles, "RJCT AM04": 4 - d_settles}),
        }
        for bank, report in reports2.items():
            assert report.sent == PHASE2[bank].count, report.data
            assert report.pending == 0, report.data
            assert report.finals == expected[bank], report.data
            assert report.data["refused"] == [], report.data
        assert expected[D]["RJCT AM04"] >= 2  # D was funded 1000.00
        # TWICE at B: the second answer to each of C's 2 payments is refused (admi.002).
        assert reports2[B].counter("rejects") == 2, reports2[B].data

        seen = {
            reason
            for report in (*reports1.values(), *reports2.values())
            for reason in report.finals
        }
        for wanted in ("ACSC", "AC03", "AC04", "AC06", "AB05", "RC04", "AM04"):
            assert any(wanted in s for s in seen), f"no {wanted} in {seen}"

        # 5. A pacs.008 from A naming B as debtor (and instructing) agent: RC01, no money.
        net.vhost()
        before = run_async(_positions(net.store))
        status, reasons, uetr = run_async(_forged_debtor_agent(net.settings))
        assert (status, reasons) == ("RJCT", ("RC01",))
        assert run_async(_positions(net.store)) == before
        forged = run_async(_payment(net.store, uetr))
        assert (forged["state"], forged["reason"], forged["entries"]) == ("rejected", "RC01", 0)

        # 6. The leader serves the banks' alias-directory API over mutual TLS.
        _alias_directory_api(net.settings.service.participant_api_port)

        # 7. The leader serves the operator API: ready (database, broker, schemas).
        _operator_api(net.settings.service.api_port, net.store)

        # The new leader stops gracefully.
        standby.terminate()
        assert standby.wait(30) == 0, standby.tail()

        # 4. The ledger holds, and no payment moved money twice.
        check = subprocess.run(
            [sys.executable, "-m", "switch.cli", "ledger", "check", "--store", net.store],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "conservation     holds" in check.stdout, check.stdout
        told = sum((r.finals for r in (*reports1.values(), *reports2.values())), Counter())
        told["RJCT RC01"] += 1
        run_async(_check_store(net.store, told))
    finally:
        for proc in procs:
            proc.kill()


def _api_call(port: int, bank: str, method: str, path: str, body: Any = None) -> Any:
    """(status, JSON body) of one call to the participant API as `bank` (its certificate)."""
    creds = load_credentials(PKI, bank)
    context = ssl.create_default_context(cafile=str(creds.ca_cert))
    context.load_cert_chain(creds.tls_cert, creds.tls_key)
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _alias_directory_api(port: int) -> None:
    alias = {"type": "EMAL", "value": "Nina@Example.com", "account": "B-1", "name": "Nina Ek"}
    status, body = _api_call(port, B, "POST", "/v1/aliases", alias)
    assert status == 201, body
    status, body = _api_call(port, A, "GET", "/v1/lookup/EMAL/nina@example.com")
    assert status == 200, body
    assert (body["participant"], body["name"]) == (B, "N**** E****"), body
    assert "B-1" not in json.dumps(body)
    status, body = _api_call(port, A, "DELETE", "/v1/aliases/EMAL/nina@example.com")
    assert (status, body["code"]) == (403, "not_owner"), body


def _operator_api(port: int, store: str) -> None:
    cli = [sys.executable, "-m", "switch.cli", "operator", "token", "create"]
    made = subprocess.run(
        [*cli, "--store", store, "--name", "night-ops", "--role", "viewer", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    context = ssl.create_default_context(cafile=str(PKI / "ca" / "ca.crt"))

    def call(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    status, body = call("/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"]["broker"] == "ok"
    status, body = call("/v1/conservation")
    assert status == 200 and json.loads(body)["ok"] is True, body
    status, body = call("/metrics")
    assert status == 200 and b"rtpswitch_queue_depth" in body, body[:500]


def _start_phase(
    net: Network, label: str, plan: dict[str, Payments], seconds: float, procs: list[Proc]
) -> dict[str, Proc]:
    """The four banks, paying as `plan` says; returns once all are connected."""
    net.vhost()
    banks = {
        bank: simulate(net.config, bank, plan.get(bank), seconds, net.workdir, label)
        for bank in BANKS
    }
    procs += banks.values()
    wait_until(
        f"the {label} banks to connect",
        lambda: all(p.has_said(" connected;") for p in banks.values()),
        list(banks.values()),
        30,
    )
    return banks


def _reports(banks: dict[str, Proc], timeout: float) -> dict[str, Report]:
    out = {}
    for bank, proc in banks.items():
        status = proc.wait(timeout)
        assert status == 0, f"{proc.name} exited {status}\n{proc.tail()}"
        out[bank] = Report.of(proc)
    return out


# --- what the broker refuses ----------------------------------------------------------------


async def _impostor_cannot_connect(workdir: Path) -> None:
    """Bank A's name on a certificate from another CA: no connection. The real one: fine."""
    impostor_ca = SchemeCA.init(workdir / "impostor-pki")
    fake = impostor_ca.issue(A)
    real = amqp(A)
    with pytest.raises(AmqpConnectError):
        await amqp_connect(replace(real, cert=fake.tls_cert, key=fake.tls_key), name="impostor")
    await (await amqp_connect(real, name="e2e real A")).close()


async def _bank_cannot_read_another_banks_queue() -> None:
    """Bank A's certificate consuming `participant.BNKBUS33XXX`: refused by the broker."""
    snoop = AmqpParticipantChannel(amqp(A), B)  # A's certificate, B's queue
    try:
        with pytest.raises(AmqpRefused, match="ACCESS_REFUSED"):
            await snoop.receive(timeout=2)
    finally:
        await snoop.close()


async def _forged_debtor_agent(settings: Settings) -> tuple[str | None, tuple[str, ...], str]:
    """Bank A sends (signed, through its connector) a pacs.008 whose debtor and instructing
    agent is Bank B; the status of the switch's answer, its reasons, and the UETR."""
    msg_id = "NETRC01" + uuid.uuid4().hex[:16].upper()
    uetr = str(uuid.uuid4())
    now = datetime.now(UTC)
    doc = credit_transfer(
        msg_id=msg_id,
        created=now,
        uetr=uetr,
        end_to_end_id="E" + msg_id,
        tx_id="T" + msg_id,
        amount=Decimal("25.00"),
        debtor_agent=Agent(bicfi=B),
        creditor_agent=Agent(bicfi=C),
        debtor_name="Victim Of Bank B",
        debtor_account="000000000042",
        creditor_name="Accomplice At Bank C",
        creditor_account="000000000043",
        settlement_date=business_date(now),
    )
    raw = envelope(Agent(bicfi=A), SWITCH, MessageType.PACS_008, msg_id, doc, now)
    async with await connect(settings, A) as bank_a:
        await bank_a.send(raw)
        deadline = time.monotonic() + 15.0
        while (left := deadline - time.monotonic()) > 0:
            data = await bank_a.receive(timeout=left)
            if data is None:
                continue
            msg = parse(data)
            if msg.mtype is not MessageType.PACS_002 or msg.document is None:
                continue
            tx = views.status_report(msg.document).transactions[0]
            if tx.original_msg_id == msg_id:
                return tx.status, tx.reasons, uetr
    raise AssertionError("no pacs.002 from the switch for the forged payment within 15 s")


# --- the system of record -------------------------------------------------------------------


async def _positions(url: str) -> dict[str, tuple[int, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT participant, available, reserved FROM positions")
    finally:
        await conn.close()
    return {r["participant"]: (r["available"], r["reserved"]) for r in rows}


async def _payment(url: str, uetr: str) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT p.state, p.reason, count(j.seq) AS entries FROM payments p "
            "LEFT JOIN journal j ON j.ref = p.id WHERE p.uetr = $1 GROUP BY p.id",
            uetr.lower(),
        )
    finally:
        await conn.close()
    assert row is not None, f"no payment {uetr} in the store"
    return dict(row)


async def _check_store(url: str, told: Counter[str]) -> None:
    """Every payment final, its journal consistent with its state (settled exactly once,
    or reserved and released, or never reserved); the outcomes are what the banks were
    told."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT p.id, p.state, p.reason,
                   count(j.seq) FILTER (WHERE j.kind = 'reserve') AS reserves,
                   count(j.seq) FILTER (WHERE j.kind = 'release') AS releases,
                   count(j.seq) FILTER (WHERE j.kind = 'settle') AS settles
            FROM payments p LEFT JOIN journal j ON j.ref = p.id
            GROUP BY p.id
            """
        )
        twice = await conn.fetch(
            "SELECT ref, count(*) FROM journal WHERE kind = 'settle' "
            "GROUP BY ref HAVING count(*) > 1"
        )
        orphans = await conn.fetchval(
            "SELECT count(*) FROM journal WHERE kind IN ('reserve', 'release', 'settle') "
            "AND ref NOT IN (SELECT id FROM payments)"
        )
    finally:
        await conn.close()
    assert twice == [], f"settled more than once: {twice}"
    assert orphans == 0
    outcomes: Counter[str] = Counter()
    for r in rows:
        state, moves = r["state"], (r["reserves"], r["releases"], r["settles"])
        assert state in FINAL_STATES, dict(r)
        if state == "settled":
            assert moves == (1, 0, 1), dict(r)
            outcomes["ACSC"] += 1
        else:
            assert moves in ((0, 0, 0), (1, 1, 0)), dict(r)
            outcomes[f"RJCT {r['reason']}"] += 1
    assert outcomes == told
