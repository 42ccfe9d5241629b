"""The operator API over HTTPS, on a switch that has cleared the demo's payments.

Each test runs the real demo (SQLite; the main paths also on PostgreSQL), keeps the
engine running, and calls the API as an operator does: tokens per role, every change
audited, maker-checker above the threshold, problems for bad input, never a 500.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switch.core import ParticipantStatus
from switch.iso20022.views import Agent
from switch.store.testing import ensure_test_database, reset_database
from tests.e2e.operator_harness import PROBLEM, Client, OperatorSwitch, operator_switch

A, B, C, D = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX", "BNKDUS33XXX"
Z = "BNKZUS33XXX"
"""Not a participant."""

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def switch(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OperatorSwitch]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'switch.db'}"
    else:
        url = await ensure_test_database("rtpswitch_ops")
        await reset_database(url)
    async with operator_switch(tmp_path, url) as running:
        yield running


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[OperatorSwitch]:
    async with operator_switch(tmp_path, f"sqlite:///{tmp_path / 'switch.db'}") as running:
        yield running


async def test_health_readiness_and_metrics(switch: OperatorSwitch) -> None:
    anonymous = switch.client()
    health = await anonymous.get("/healthz")
    assert (health.status, health.body) == (200, {"status": "ok"})
    ready = await anonymous.get("/readyz")
    assert ready.status == 200, ready.body
    assert ready.body["checks"] == {
        "database": "ok",
        "broker": "ok",
        "schemas": "ok",
        "engine": "ok",
    }
    refused = await anonymous.get("/metrics")
    assert refused.status == 401 and refused.code == "token_required"
    metrics = await switch.client("vera").get("/metrics")
    assert metrics.status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.raw.decode())}
    payments = {
        (s.labels["state"], s.labels["reason"]): s.value
        for s in families["rtpswitch_payments"].samples
        if s.name == "rtpswitch_payments_total"
    }
    assert payments[("settled", "")] == switch.demo.engine.stats.settled
    available = {
        s.labels["participant"]: s.value for s in families["rtpswitch_position_available"].samples
    }
    assert set(available) == {A, B, C, D}


async def test_participants_positions_journal_and_conservation(switch: OperatorSwitch) -> None:
    viewer = switch.client("vera")
    listed = await viewer.get("/v1/participants")
    assert listed.status == 200
    by_id = {p["id"]: p for p in listed.body["participants"]}
    assert set(by_id) == {A, B, C, D}
    assert by_id[A]["connected"] is True and by_id[A]["status"] == "active"
    book = switch.demo.engine.book
    positions = await viewer.get("/v1/positions")
    assert positions.body["positions"][B]["available"] == switch.service.money(
        book.position(B).available
    )
    one = await viewer.get(f"/v1/participants/{C}")
    assert one.status == 200 and one.body["name"] == "Bank C"
    journal = await viewer.get(f"/v1/journal?participant={A}&limit=5")
    assert journal.status == 200 and len(journal.body["entries"]) == 5
    seqs = [e["seq"] for e in journal.body["entries"]]
    assert seqs == sorted(seqs, reverse=True)
    for entry in journal.body["entries"]:
        assert A in entry["entry"]["debit"] or A in entry["entry"]["credit"]
    more = await viewer.get(f"/v1/journal?participant={A}&limit=5&cursor={journal.body['next']}")
    assert more.body["entries"][0]["seq"] < seqs[-1]
    conservation = await viewer.get("/v1/conservation")
    assert conservation.body["ok"] is True
    assert conservation.body["memory"] == conservation.body["database"]


async def test_payment_search_and_one_payment_with_its_trail(switch: OperatorSwitch) -> None:
    viewer = switch.client("vera")
    settled = await viewer.get("/v1/payments?state=settled&limit=3")
    assert settled.status == 200 and len(settled.body["payments"]) == 3
    assert {p["state"] for p in settled.body["payments"]} == {"settled"}
    page2 = await viewer.get(f"/v1/payments?state=settled&limit=3&cursor={settled.body['next']}")
    first_ids = {p["id"] for p in settled.body["payments"]}
    assert not first_ids & {p["id"] for p in page2.body["payments"]}
    one = settled.body["payments"][0]
    by_uetr = await viewer.get(f"/v1/payments?uetr={one['uetr']}")
    assert [p["id"] for p in by_uetr.body["payments"]] == [one["id"]]
    detail = await viewer.get(f"/v1/payments/{one['uetr']}?xml=true")
    assert detail.status == 200
    assert [t["state"] for t in detail.body["transitions"]] == [
        "received",
        "reserved",
        "forwarded",
        "settled",
    ]
    types = [(m["direction"], m["msg_type"][:8]) for m in detail.body["messages"]]
    assert ("in", "pacs.008") in types and ("out", "pacs.008") in types
    assert ("in", "pacs.002") in types and ("out", "pacs.002") in types
    assert all(m["xml"].startswith("<") for m in detail.body["messages"])
    rejected = await viewer.get(f"/v1/payments?state=rejected&reason=AC03&participant={A}")
    assert rejected.status == 200
    for p in rejected.body["payments"]:
        assert p["reason"] == "AC03" and A in (p["debtor_agent"], p["creditor_agent"])
    amounts = await viewer.get("/v1/payments?min_amount=10.00&max_amount=20.00&limit=500")
    for p in amounts.body["payments"]:
        assert 10 <= float(p["amount"]) <= 20
    window = await viewer.get(
        "/v1/payments?since=" + quote(one["created_at"]) + "&until=" + quote(one["created_at"])
    )
    assert window.body["payments"] == []
    missing = await viewer.get("/v1/payments/P-does-not-exist")
    assert (missing.status, missing.code) == (404, "unknown_payment")


async def test_suspend_and_resume_are_audited_and_enforced(switch: OperatorSwitch) -> None:
    operator = switch.client("olga")
    suspended = await operator.post(f"/v1/participants/{B}/suspend")
    assert suspended.status == 200 and suspended.body["status"] == "suspended"
    assert switch.demo.engine.ctx.directory[B].status is ParticipantStatus.SUSPENDED
    again = await operator.post(f"/v1/participants/{B}/suspend")
    assert (again.status, again.code) == (409, "already_suspended")
    # a payment to the suspended bank is rejected AB08 by the engine
    bank = switch.demo.banks[A]
    sent = await bank.pay(creditor_agent=Agent(bicfi=B), amount=Decimal("1.00"))
    final = await bank.wait_final(sent.uetr, 5)
    assert final is not None and (final.status, final.reason) == ("RJCT", "AB08")
    resumed = await operator.post(f"/v1/participants/{B}/resume")
    assert resumed.status == 200 and resumed.body["status"] == "active"
    audit = await switch.client("vera").get(f"/v1/audit?target={B}")
    actions = [(r["action"], r["actor"]) for r in audit.body["records"]]
    assert actions[:2] == [("participant.resume", "olga"), ("participant.suspend", "olga")]
    record = audit.body["records"][1]
    assert record["before"]["status"] == "active" and record["after"]["status"] == "suspended"


async def test_fund_and_defund_move_money_and_keep_conservation(switch: OperatorSwitch) -> None:
    operator = switch.client("olga")
    book = switch.demo.engine.book
    before = book.position(C).available
    funded = await operator.post(f"/v1/participants/{C}/fund", {"amount": "250.50"})
    assert funded.status == 200, funded.body
    assert funded.body["status"] == "done" and funded.body["journal"][0]["amount"] == "250.50"
    assert book.position(C).available == before + 25050
    defunded = await operator.post(
        f"/v1/participants/{C}/defund", {"amount": "50.50", "reference": "EOD sweep"}
    )
    assert defunded.status == 200 and book.position(C).available == before + 20000
    too_much = await operator.post(f"/v1/participants/{D}/defund", {"amount": "999999.00"})
    assert (too_much.status, too_much.code, too_much.field) == (
        409,
        "insufficient_position",
        "amount",
    )
    assert too_much.headers["content-type"] == PROBLEM
    conservation = await switch.client("vera").get("/v1/conservation")
    assert conservation.body["ok"] is True
    assert conservation.body["memory"] == conservation.body["database"]
    audit = await switch.client("vera").get("/v1/audit?action=position.defund")
    assert audit.body["records"][0]["after"]["available"] == switch.service.money(
        book.position(C).available
    )


async def test_maker_checker_above_the_threshold(embedded: OperatorSwitch) -> None:
    book = embedded.demo.engine.book
    before = book.position(A).available
    asked = await embedded.client("olga").post(
        f"/v1/participants/{A}/fund", {"amount": "2000000.00", "reference": "top-up"}
    )
    assert asked.status == 202 and asked.body["status"] == "pending_approval"
    approval = asked.body["approval"]
    assert book.position(A).available == before  # nothing moved yet
    pending = await embedded.client("vera").get("/v1/approvals?state=pending")
    assert [a["id"] for a in pending.body] == [approval["id"]]
    alerts = await embedded.client("vera").get("/v1/alerts")
    assert "approvals_pending" in {a["code"] for a in alerts.body}
    own = await embedded.client("olga").post(f"/v1/approvals/{approval['id']}/approve")
    assert (own.status, own.code) == (403, "same_operator")
    viewer = await embedded.client("vera").post(f"/v1/approvals/{approval['id']}/approve")
    assert (viewer.status, viewer.code) == (403, "forbidden")
    approved = await embedded.client("otto").post(f"/v1/approvals/{approval['id']}/approve")
    assert approved.status == 200, approved.body
    assert approved.body["state"] == "approved" and approved.body["checker"] == "otto"
    assert book.position(A).available == before + 200_000_000
    twice = await embedded.client("otto").post(f"/v1/approvals/{approval['id']}/approve")
    assert (twice.status, twice.code) == (409, "approval_not_pending")
    assert book.position(A).available == before + 200_000_000
    audit = await embedded.client("vera").get(f"/v1/audit?target={A}")
    trail = [(r["action"], r["actor"], r["approval"]) for r in audit.body["records"][:3]]
    assert trail == [
        ("approval.approve", "otto", approval["id"]),
        ("position.fund", "olga", approval["id"]),
        ("approval.request", "olga", approval["id"]),
    ]
    # a rejected request moves nothing
    asked = await embedded.client("olga").post(
        f"/v1/participants/{A}/defund", {"amount": "1500000.00"}
    )
    rejected = await embedded.client("otto").post(
        f"/v1/approvals/{asked.body['approval']['id']}/reject"
    )
    assert rejected.body["state"] == "rejected"
    assert book.position(A).available == before + 200_000_000


async def test_onboard_limits_and_tokens(embedded: OperatorSwitch) -> None:
    admin = embedded.client("ada")
    body = {"id": "BNKEUS33XXX", "member_id": "031000053", "name": "Bank E", "limit": "500.00"}
    by_operator = await embedded.client("olga").post("/v1/participants", body)
    assert (by_operator.status, by_operator.code) == (403, "forbidden")
    onboarded = await admin.post("/v1/participants", body)
    assert onboarded.status == 201, onboarded.body
    assert onboarded.body["available"] == "0.00" and onboarded.body["limit"] == "500.00"
    again = await admin.post("/v1/participants", body)
    assert (again.status, again.code) == (409, "participant_exists")
    limit = await admin.call("PUT", "/v1/participants/BNKEUS33XXX/limit", {"limit": None})
    assert limit.status == 200 and limit.body["limit"] is None
    state = await embedded.demo.store.load_state()
    assert "BNKEUS33XXX" in state.participants and state.participants["BNKEUS33XXX"].limit is None
    # tokens: issue, use, revoke
    issued = await admin.post("/v1/tokens", {"name": "night shift", "role": "viewer"})
    assert issued.status == 201 and issued.body["token"].startswith("rtpo_")
    night = embedded.client().as_(issued.body["token"])
    assert (await night.get("/v1/participants")).status == 200
    listed = await admin.get("/v1/tokens")
    assert all("token" not in t for t in listed.body)
    revoked = await admin.call("DELETE", f"/v1/tokens/{issued.body['id']}")
    assert revoked.status == 200 and revoked.body["revoked_at"] is not None
    after = await night.get("/v1/participants")
    assert (after.status, after.code) == (401, "token_revoked")
    assert after.headers["www-authenticate"].startswith("Bearer")
    audit = await embedded.client("vera").get("/v1/audit?actor=ada")
    assert [r["action"] for r in audit.body["records"]] == [
        "token.revoke",
        "token.create",
        "participant.limit",
        "participant.onboard",
    ]


async def test_dashboard_data(embedded: OperatorSwitch) -> None:
    embedded.service.sample()
    data = await embedded.client("vera").get("/v1/dashboard")
    assert data.status == 200
    body = data.body
    assert body["switch"]["engine_running"] is True and body["switch"]["store"] == "sqlite"
    assert body["totals"]["settled"] == embedded.demo.engine.stats.settled
    assert body["latency_ms"]["count"] > 0 and body["latency_ms"]["p50"] > 0
    rows = {p["id"]: p for p in body["participants"]}
    assert rows[D]["low_position"] is True and rows[A]["low_position"] is False
    assert body["recent_rejects"] and all(r["reason"] for r in body["recent_rejects"])
    codes = {(a["code"], a["participant"]) for a in body["alerts"]}
    assert ("low_position", D) in codes or ("position_exhausted", D) in codes
    page = await embedded.client().get("/dashboard")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")


BAD_INPUTS = [
    ("GET", "/v1/participants", None, None, 401, "token_required"),
    ("GET", "/v1/participants", None, "rtpo_000000000000_" + "a" * 43, 401, "invalid_token"),
    ("GET", "/v1/participants", None, "not a token", 401, "invalid_token"),
    ("POST", f"/v1/participants/{A}/suspend", None, "vera", 403, "forbidden"),
    ("POST", f"/v1/participants/{A}/fund", {"amount": "5.00"}, "vera", 403, "forbidden"),
    ("GET", "/v1/tokens", None, "olga", 403, "forbidden"),
    ("GET", f"/v1/participants/{Z}", None, "vera", 404, "unknown_participant"),
    (
        "POST",
        "/v1/participants/BNKZUS33XXX/fund",
        {"amount": "5.00"},
        "olga",
        404,
        "unknown_participant",
    ),
    ("POST", f"/v1/participants/{A}/fund", {"amount": "0.00"}, "olga", 422, "invalid_amount"),
    ("POST", f"/v1/participants/{A}/fund", {"amount": "-5.00"}, "olga", 422, "invalid_request"),
    ("POST", f"/v1/participants/{A}/fund", {"amount": "1.001"}, "olga", 422, "invalid_amount"),
    ("POST", f"/v1/participants/{A}/fund", {"amount": 5}, "olga", 422, "invalid_request"),
    ("POST", f"/v1/participants/{A}/fund", {}, "olga", 422, "invalid_request"),
    (
        "POST",
        f"/v1/participants/{A}/defund",
        {"amount": "1.00", "x": 1},
        "olga",
        422,
        "invalid_request",
    ),
    ("GET", "/v1/payments?limit=0", None, "vera", 422, "invalid_request"),
    ("GET", "/v1/payments?limit=abc", None, "vera", 422, "invalid_request"),
    ("GET", "/v1/payments?state=lost", None, "vera", 422, "invalid_request"),
    ("GET", "/v1/payments?since=yesterday", None, "vera", 422, "invalid_request"),
    ("GET", "/v1/payments?since=2026-01-01T00:00:00", None, "vera", 422, "invalid_time"),
    ("GET", "/v1/payments?min_amount=1e5", None, "vera", 422, "invalid_request"),
    ("GET", "/v1/payments?cursor=%21%21", None, "vera", 422, "invalid_cursor"),
    ("GET", "/v1/journal?cursor=bm90IGEgY3Vyc29y", None, "vera", 422, "invalid_cursor"),
    ("POST", "/v1/approvals/APRnope/approve", None, "olga", 404, "unknown_approval"),
    ("DELETE", "/v1/tokens/0123456789ab", None, "ada", 404, "unknown_token"),
    ("DELETE", "/v1/tokens/zz", None, "ada", 422, "invalid_request"),
    ("POST", "/v1/tokens", {"name": "x", "role": "root"}, "ada", 422, "invalid_request"),
    (
        "POST",
        "/v1/participants",
        {"id": "bad", "member_id": "1", "name": ""},
        "ada",
        422,
        "invalid_request",
    ),
    ("GET", "/v1/nothing-here", None, "vera", 404, "no_such_resource"),
    ("GET", f"/v1/payments?partcipant={A}", None, "vera", 422, "unknown_parameter"),
    ("GET", "/v1/participants?verbose=1", None, "vera", 422, "unknown_parameter"),
]


async def test_bad_input_is_a_problem_never_a_500(embedded: OperatorSwitch) -> None:
    wrong = []
    for method, path, body, who, status, code in BAD_INPUTS:
        token = embedded.tokens.get(who or "", who)
        answer = await embedded.client().as_(token).call(method, path, body)
        if (answer.status, answer.code) != (status, code):
            wrong.append((method, path, body, who, answer.status, answer.body))
            continue
        assert answer.headers["content-type"] == PROBLEM
        assert set(answer.body) >= {"type", "title", "status", "detail", "code", "field"}
        assert re.fullmatch(r"urn:rtpswitch:problem:[a-z_]+", answer.body["type"])
    assert wrong == []
    # nothing moved
    assert embedded.demo.engine.book.conservation().ok


async def test_malformed_json_and_oversized_bodies(embedded: OperatorSwitch) -> None:
    operator = embedded.client("olga")
    broken = await operator.call("POST", f"/v1/participants/{A}/fund", raw=b"{not json")
    assert (broken.status, broken.code) == (422, "invalid_request")
    huge = await operator.call("POST", f"/v1/participants/{A}/fund", raw=b"x" * 100_000)
    assert (huge.status, huge.code) == (413, "body_too_large")


def test_demo_serve_keeps_the_dashboard_up_until_sigterm(tmp_path: Path) -> None:
    """`rtpswitch demo --serve`: the report, then where to sign in, then up until SIGTERM."""
    args = [sys.executable, "-m", "switch.cli", "demo", "--payments", "60", "--seed", "3"]
    args += ["--store", f"sqlite:///{tmp_path / 'demo.db'}", "--timeout", "0.3"]
    args += ["--serve", "--api-port", "0", "--pki-dir", str(tmp_path / "pki")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("The API and the dashboard stay up"):
                break
        text = "".join(lines)
        url = re.search(r"Operator dashboard: (https://\S+)/dashboard", text)
        token = re.search(r"admin token \(valid until revoked\): (rtpo_\S+)", text)
        finished = proc.poll() is not None and proc.stderr is not None
        assert url and token, text + (proc.stderr.read() if finished and proc.stderr else "")
        assert "conservation" in text.lower()
        port = int(url.group(1).rsplit(":", 1)[1])
        client = Client(port, tmp_path / "pki" / "ca" / "ca.crt", token.group(1))
        data = client.call_sync("GET", "/v1/dashboard")
        assert data.status == 200 and data.body["totals"]["settled"] > 0
        assert client.call_sync("GET", "/dashboard").status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
