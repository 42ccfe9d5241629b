"""The participants' alias-directory API: a real uvicorn server over mutual TLS.

Each test makes a throwaway scheme PKI and store in tmp_path, serves the API on an
ephemeral port and calls it as the banks do: an HTTPS client presenting the bank's
scheme certificate. Also: the operator's bulk import and listing commands.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import pytest

from switch.api import ApiServer, start_participant_api
from switch.cli import main
from switch.core.rules import Participant
from switch.directory import AliasType, BucketSettings, LookupLimiter
from switch.directory_service import DirectoryService
from switch.security.pki import SchemeCA
from switch.store.base import Store, open_store
from switch.store.testing import ensure_test_database, reset_database

A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
"""A and B are participants; C has a scheme certificate but is not a participant."""

PARTICIPANTS = [
    Participant(id=A, member_id="011000015", name="Bank A"),
    Participant(id=B, member_id="021000021", name="Bank B"),
]
PROBLEM = "application/problem+json"


# --- the client ----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def code(self) -> Any:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def field(self) -> Any:
        return self.body.get("field") if isinstance(self.body, dict) else None


def client_context(pki: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A bank's TLS context: trusts the scheme CA, presents `cert` if given."""
    context = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class Bank:
    """An HTTPS client of the API presenting a certificate (one connection per request)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.context = context

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=10)

    def call_sync(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        conn: http.client.HTTPSConnection | None = None,
    ) -> Answer:
        own = conn is None
        conn = conn or self.connection()
        try:
            headers = {"Accept": "application/json"}
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            hdrs = {k.lower(): v for k, v in response.getheaders()}
            parsed = json.loads(payload) if payload else None
            return Answer(response.status, hdrs, parsed)
        finally:
            if own:
                conn.close()

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        return await asyncio.to_thread(self.call_sync, method, path, body, **kw)

    async def get(self, path: str) -> Answer:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None) -> Answer:
        return await self.call("POST", path, body)


def credentials(pki: Path, who: str) -> tuple[Path, Path]:
    folder = pki / "participants" / who
    return folder / "tls.crt", folder / "tls.key"


def alias_path(kind: str, value: str) -> str:
    return f"/v1/aliases/{kind}/{quote(value, safe='@')}"


def lookup_path(kind: str, value: str, end_user: str | None = None) -> str:
    path = f"/v1/lookup/{kind}/{quote(value, safe='@')}"
    return path if end_user is None else f"{path}?end_user={quote(end_user)}"


def assert_problem(answer: Answer, status: int, code: str, field: str | None = None) -> None:
    """The answer is an RFC 9457 problem with this status, code and field."""
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    body = answer.body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"urn:rtpswitch:problem:{code}"
    assert body["title"] and body["detail"]
    assert body["field"] == field, body


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A scheme PKI with TLS credentials for A, B and C."""
    directory = tmp_path / "pki"
    ca = SchemeCA.init(directory)
    for who in (A, B, C):
        ca.issue(who)
    return directory


@dataclass
class Api:
    server: ApiServer
    service: DirectoryService
    limiter: LookupLimiter
    pki: Path

    def bank(self, who: str) -> Bank:
        return Bank(self.server.port, client_context(self.pki, *credentials(self.pki, who)))


def default_limiter() -> LookupLimiter:
    return LookupLimiter(
        participant=BucketSettings(size=1000, refill_per_second=1),
        end_user=BucketSettings(size=100, refill_per_second=1),
    )


async def start_api(store: Store, pki: Path, limiter: LookupLimiter) -> Api:
    await store.migrate()
    await store.upsert_participants(PARTICIPANTS)
    server, service = await start_participant_api(
        store,
        pki_dir=pki,
        host="127.0.0.1",
        port=0,
        limiter=limiter,
        claim_period=timedelta(days=7),
    )
    return Api(server, service, limiter, pki)


@pytest.fixture
def limiter() -> LookupLimiter:
    return default_limiter()


@pytest.fixture
async def api(tmp_path: Path, pki: Path, limiter: LookupLimiter) -> AsyncIterator[Api]:
    """The API on a fresh SQLite store, A and B participants."""
    store = open_store(f"sqlite:///{tmp_path / 'switch.db'}")
    running = await start_api(store, pki, limiter)
    try:
        yield running
    finally:
        await running.server.stop()
        await store.close()


# --- the flow across two banks ---------------------------------------------------------------


async def register_lookup_claim(api: Api) -> None:
    """Register, read, look up (masked), update, (de)activate, claim and move, delete."""
    bank_a, bank_b = api.bank(A), api.bank(B)

    r = await bank_a.post(
        "/v1/aliases",
        {"type": "VPA", "value": " Alice.Smith@BankA ", "account": "ACC-1", "name": "Alice Smith"},
    )
    assert r.status == 201, r.body
    assert r.body["value"] == "alice.smith@banka"
    assert r.body["status"] == "active" and r.body["account"] == "ACC-1"
    assert r.headers["location"] == "/v1/aliases/VPA/alice.smith@banka"

    r = await bank_a.post("/v1/aliases", {"type": "EVP", "account": "ACC-2", "name": "Alice Smith"})
    assert r.status == 201, r.body
    evp = r.body["value"]
    assert len(evp) == 36 and evp.count("-") == 4

    r = await bank_a.get("/v1/aliases")
    assert r.status == 200
    assert sorted(a["value"] for a in r.body["aliases"]) == sorted([evp, "alice.smith@banka"])
    r = await bank_b.get("/v1/aliases")
    assert r.body == {"aliases": []}

    # another bank sees the owner and the masked name only
    r = await bank_b.get(lookup_path("VPA", "alice.smith@banka"))
    assert r.status == 200, r.body
    assert r.body == {
        "type": "VPA",
        "value": "alice.smith@banka",
        "participant": A,
        "name": "A**** S****",
    }
    r = await bank_b.get(lookup_path("EVP", evp, end_user="customer-9"))
    assert r.status == 200 and r.body["participant"] == A
    assert "ACC" not in json.dumps(r.body)

    # reading or changing another bank's alias
    r = await bank_b.get(alias_path("VPA", "alice.smith@banka"))
    assert_problem(r, 404, "not_found", "value")
    r = await bank_b.call("PATCH", alias_path("VPA", "alice.smith@banka"), {"account": "X-1"})
    assert_problem(r, 403, "not_owner", "participant")
    r = await bank_b.call("DELETE", alias_path("VPA", "alice.smith@banka"))
    assert_problem(r, 403, "not_owner", "participant")

    r = await bank_a.call(
        "PATCH", alias_path("VPA", "alice.smith@banka"), {"name": "Alice B Smith"}
    )
    assert r.status == 200 and r.body["name"] == "Alice B Smith"
    r = await bank_a.post(alias_path("VPA", "alice.smith@banka") + "/deactivate")
    assert r.status == 200 and r.body["status"] == "inactive"
    r = await bank_b.get(lookup_path("VPA", "alice.smith@banka"))
    assert_problem(r, 404, "not_found", "value")
    r = await bank_a.post(alias_path("VPA", "alice.smith@banka") + "/activate")
    assert r.status == 200 and r.body["status"] == "active"
    r = await bank_a.get(alias_path("VPA", "alice.smith@banka"))
    assert r.status == 200 and r.body["name"] == "Alice B Smith"

    # portability: B claims, A confirms, the alias is B's at once
    claim = {"type": "VPA", "value": "alice.smith@banka", "account": "B-77", "name": "Alice Smith"}
    r = await bank_b.post("/v1/claims", claim)
    assert r.status == 201, r.body
    claim_id = r.body["id"]
    assert r.headers["location"] == f"/v1/claims/{claim_id}"
    assert r.body["state"] == "open" and r.body["role"] == "claimant"
    assert r.body["owner"] == A and r.body["account"] == "B-77"
    r = await bank_b.post("/v1/claims", claim)
    assert_problem(r, 409, "claim_exists", "value")

    r = await bank_a.get("/v1/claims?role=owner")
    assert r.status == 200
    (seen,) = r.body["claims"]
    assert seen["id"] == claim_id and seen["role"] == "owner"
    assert seen["account"] is None and seen["name"] == "A**** S****"
    r = await bank_a.get("/v1/claims?role=claimant")
    assert r.body == {"claims": []}
    r = await bank_a.post(f"/v1/claims/{claim_id}/cancel")
    assert_problem(r, 403, "not_owner", "participant")
    r = await bank_b.post(f"/v1/claims/{claim_id}/confirm")
    assert_problem(r, 403, "not_owner", "participant")

    r = await bank_a.post(f"/v1/claims/{claim_id}/confirm")
    assert r.status == 200 and r.body["state"] == "confirmed"
    assert r.body["closed_at"] is not None
    r = await bank_a.post(f"/v1/claims/{claim_id}/reject")
    assert_problem(r, 409, "claim_not_open", "claim")
    r = await bank_a.get(lookup_path("VPA", "alice.smith@banka"))
    assert r.status == 200 and r.body["participant"] == B
    r = await bank_a.get(alias_path("VPA", "alice.smith@banka"))
    assert_problem(r, 404, "not_found", "value")
    r = await bank_b.get(alias_path("VPA", "alice.smith@banka"))
    assert r.status == 200 and r.body["account"] == "B-77"
    r = await bank_b.get(f"/v1/claims/{claim_id}")
    assert r.status == 200 and r.body["state"] == "confirmed"

    # a claim the owner rejects, and one the claimant cancels: the alias stays
    r = await bank_a.post(
        "/v1/aliases",
        {"type": "TELE", "value": "+1 (212) 555-0100", "account": "A-9", "name": "Bo"},
    )
    assert r.status == 201 and r.body["value"] == "+12125550100"
    tele = {"type": "TELE", "value": "+12125550100", "account": "B-9", "name": "Bo"}
    r = await bank_b.post("/v1/claims", tele)
    assert r.status == 201
    r = await bank_a.post(f"/v1/claims/{r.body['id']}/reject")
    assert r.status == 200 and r.body["state"] == "rejected"
    r = await bank_b.post("/v1/claims", tele)
    r = await bank_b.post(f"/v1/claims/{r.body['id']}/cancel")
    assert r.status == 200 and r.body["state"] == "cancelled"
    r = await bank_b.get(lookup_path("TELE", "+12125550100"))
    assert r.body["participant"] == A
    r = await bank_b.get("/v1/claims?state=open")
    assert r.body == {"claims": []}
    r = await bank_b.get("/v1/claims")
    assert [c["state"] for c in r.body["claims"]] == ["confirmed", "rejected", "cancelled"]
    r = await bank_b.get("/v1/claims/no-such-claim")
    assert_problem(r, 404, "not_found", "claim")

    # delete: the alias stops resolving and is free again
    r = await bank_a.call("DELETE", alias_path("EVP", evp))
    assert r.status == 200 and r.body["status"] == "deleted"
    r = await bank_b.get(lookup_path("EVP", evp))
    assert_problem(r, 404, "not_found", "value")
    r = await bank_a.get("/v1/aliases")
    assert [a["value"] for a in r.body["aliases"]] == ["+12125550100"]


async def test_register_lookup_and_claim_across_two_banks(api: Api) -> None:
    await register_lookup_claim(api)
    # the service's directory follows what the API stored (other processes see it too)
    await api.service.refresh()
    alias = api.service.directory.resolve("VPA", "alice.smith@banka")
    assert alias is not None and alias.participant == B


@pytest.mark.postgres
async def test_register_lookup_and_claim_on_postgres(pki: Path, limiter: LookupLimiter) -> None:
    url = await ensure_test_database("rtpswitch_dirapi")
    await reset_database(url)
    store = open_store(url)
    api = await start_api(store, pki, limiter)
    try:
        await register_lookup_claim(api)
    finally:
        await api.server.stop()
        await store.close()


async def test_writes_by_another_process_are_seen_at_once(api: Api, tmp_path: Path) -> None:
    """A registration stored through another service on the same store is read at once."""
    other_store = open_store(f"sqlite:///{tmp_path / 'switch.db'}")
    other = DirectoryService(
        other_store,
        clock=lambda: datetime.now(UTC),
        claim_period=timedelta(days=7),
        claim_ids=lambda: uuid4().hex,
    )
    try:
        await other.start()
        await other.register(
            participant=B, kind=AliasType.EMAL, value="bo@example.com", account="B-1", name="Bo Lee"
        )
    finally:
        await other_store.close()
    r = await api.bank(A).get(lookup_path("EMAL", "bo@example.com"))
    assert r.status == 200 and r.body["name"] == "B**** L****"
    r = await api.bank(B).get("/v1/aliases")
    assert [a["value"] for a in r.body["aliases"]] == ["bo@example.com"]


# --- bad input -----------------------------------------------------------------------------


async def test_bad_input_gets_a_problem_naming_the_field(api: Api) -> None:
    bank_a, bank_b = api.bank(A), api.bank(B)
    good = {"type": "EMAL", "value": "ann@example.com", "account": "A-1", "name": "Ann Ode"}
    assert (await bank_a.post("/v1/aliases", good)).status == 201

    cases: list[tuple[Bank, dict[str, Any], int, str, str | None]] = [
        (bank_a, {**good, "value": "ann@@example.com"}, 422, "invalid_alias", "value"),
        (bank_a, {**good, "value": "ann@example"}, 422, "invalid_alias", "value"),
        (bank_a, {**good, "type": "TELE", "value": "555-0100"}, 422, "invalid_alias", "value"),
        (bank_a, {**good, "type": "TELE", "value": "+1 555 abc"}, 422, "invalid_alias", "value"),
        (bank_a, {**good, "type": "EVP", "value": "x"}, 422, "invalid_alias", "value"),
        (
            bank_a,
            {**good, "value": "zed@example.com", "account": "A 1"},
            422,
            "invalid_account",
            "account",
        ),
        (bank_a, {**good, "value": "zed@example.com", "name": " "}, 422, "invalid_name", "name"),
        (bank_a, good, 409, "duplicate", "value"),
        (bank_b, {**good, "value": "ANN@example.com"}, 409, "duplicate", "value"),
        (bank_a, {**good, "type": "IBAN"}, 422, "invalid_request", "type"),
        (
            bank_a,
            {"type": "VPA", "value": "a@bank", "name": "A"},
            422,
            "invalid_request",
            "account",
        ),
        (bank_a, {**good, "account": 12}, 422, "invalid_request", "account"),
        (bank_a, {**good, "colour": "red"}, 422, "invalid_request", "colour"),
    ]
    for bank, body, status, code, field in cases:
        r = await bank.post("/v1/aliases", body)
        assert_problem(r, status, code, field)

    r = await bank_a.call("POST", "/v1/aliases", raw=b'{"type": "VPA",')
    assert_problem(r, 422, "invalid_request", "body")
    r = await bank_a.call("POST", "/v1/aliases", raw=b"[1, 2]")
    assert_problem(r, 422, "invalid_request", "body")
    r = await bank_a.call("POST", "/v1/aliases", raw=b"x" * 100_000)
    assert_problem(r, 413, "body_too_large")

    # path and query values
    r = await bank_a.get("/v1/aliases/IBAN/x")
    assert_problem(r, 422, "invalid_request", "type")
    r = await bank_a.get(alias_path("EMAL", "not-an-address"))
    assert_problem(r, 422, "invalid_alias", "value")
    r = await bank_b.get(lookup_path("TELE", "12345"))
    assert_problem(r, 422, "invalid_alias", "value")
    r = await bank_b.get(lookup_path("EMAL", "ann@example.com") + "?end_user=")
    assert_problem(r, 422, "invalid_request", "end_user")
    r = await bank_b.get("/v1/claims?role=judge")
    assert_problem(r, 422, "invalid_request", "role")
    r = await bank_a.call("PATCH", alias_path("EMAL", "ann@example.com"), {})
    assert_problem(r, 422, "no_change")
    r = await bank_a.call("PATCH", alias_path("EMAL", "nobody@example.com"), {"name": "N"})
    assert_problem(r, 404, "not_found", "value")

    # claims that cannot be
    r = await bank_a.post("/v1/aliases", {"type": "EVP", "account": "A-2", "name": "Ann Ode"})
    evp = r.body["value"]
    claim = {"type": "EVP", "value": evp, "account": "B-1", "name": "Ann Ode"}
    r = await bank_b.post("/v1/claims", claim)
    assert_problem(r, 422, "evp_not_portable", "type")
    r = await bank_a.post("/v1/claims", {**claim, "type": "EMAL", "value": "ann@example.com"})
    assert_problem(r, 409, "same_owner", "participant")
    r = await bank_b.post("/v1/claims", {**claim, "type": "EMAL", "value": "who@example.com"})
    assert_problem(r, 404, "not_found", "value")

    # no such route, no such method: problems too
    r = await bank_a.get("/v2/aliases")
    assert_problem(r, 404, "no_such_resource")
    r = await bank_a.call("PUT", "/v1/aliases")
    assert_problem(r, 405, "method_not_allowed")


@pytest.fixture
def tight_limiter() -> LookupLimiter:
    """Room for five misses per participant and two per end user; no refill to speak of."""
    return LookupLimiter(
        participant=BucketSettings(size=100, refill_per_second=0.01),
        end_user=BucketSettings(size=40, refill_per_second=0.01),
    )


async def test_lookup_flood_is_refused_429(
    tmp_path: Path, pki: Path, tight_limiter: LookupLimiter
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'switch.db'}")
    api = await start_api(store, pki, tight_limiter)
    try:
        bank_a, bank_b = api.bank(A), api.bank(B)
        r = await bank_a.post(
            "/v1/aliases", {"type": "VPA", "value": "ann@banka", "account": "A-1", "name": "Ann"}
        )
        assert r.status == 201

        # an end user guessing: two misses empty the bucket (20 each of 40)
        for guess in ("ann1@banka", "ann2@banka"):
            r = await bank_b.get(lookup_path("VPA", guess, end_user="mallory"))
            assert_problem(r, 404, "not_found", "value")
        r = await bank_b.get(lookup_path("VPA", "ann@banka", end_user="mallory"))
        assert_problem(r, 429, "rate_limited", "end_user")
        assert int(r.headers["retry-after"]) >= 1
        # another end user of the same bank still may
        r = await bank_b.get(lookup_path("VPA", "ann@banka", end_user="trent"))
        assert r.status == 200 and r.body["participant"] == A

        # the bank itself guessing: 100 tokens, 41 spent, two more misses leave 1 - then none
        for n in range(3):
            r = await bank_b.get(lookup_path("VPA", f"bob{n}@banka"))
            assert r.status == 404
        r = await bank_b.get(lookup_path("VPA", "ann@banka"))
        assert_problem(r, 429, "rate_limited", None)
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 2000
        assert api.limiter.refused == 2
        # the refusal is the lookup's alone: the other bank is not affected
        r = await bank_a.get(lookup_path("VPA", "ann@banka"))
        assert r.status == 200
    finally:
        await api.server.stop()
        await store.close()


# --- who may call --------------------------------------------------------------------------


def _refused_handshake(bank: Bank) -> BaseException | None:
    try:
        answer = bank.call_sync("GET", "/v1/aliases")
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return exc
    raise AssertionError(f"the server answered {answer.status}: {answer.body}")


async def test_no_client_certificate_no_handshake(api: Api) -> None:
    bank = Bank(api.server.port, client_context(api.pki))
    assert await asyncio.to_thread(_refused_handshake, bank) is not None


async def test_certificate_of_another_ca_no_handshake(api: Api, tmp_path: Path) -> None:
    other = SchemeCA.init(tmp_path / "other-pki", name="Impostor CA")
    creds = other.issue(A)  # same CN as a real participant
    bank = Bank(api.server.port, client_context(api.pki, creds.tls_cert, creds.tls_key))
    assert await asyncio.to_thread(_refused_handshake, bank) is not None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_1_1_no_handshake(api: Api) -> None:
    context = client_context(api.pki, *credentials(api.pki, A))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await asyncio.to_thread(Bank(api.server.port, context).call_sync, "GET", "/v1/aliases")


async def test_signing_certificate_no_handshake(api: Api) -> None:
    """A participant's message-signing key cannot open a TLS session (EKU documentSigning)."""
    creds = SchemeCA.load(api.pki).credentials(A)
    bank = Bank(api.server.port, client_context(api.pki, creds.signing_cert, creds.signing_key))
    assert await asyncio.to_thread(_refused_handshake, bank) is not None


async def test_revoked_certificate_refused_at_once(api: Api) -> None:
    bank = api.bank(A)
    kept_open = bank.connection()
    try:
        r = await bank.call("GET", "/v1/aliases", conn=kept_open)
        assert r.status == 200
        SchemeCA.load(api.pki).revoke(A, reason="key_compromise")
        r = await bank.get("/v1/aliases")
        assert_problem(r, 403, "certificate_revoked")
        assert "revoked" in r.body["detail"]
        # refused before its body or path is looked at
        r = await bank.call("POST", "/v1/aliases", raw=b"{not json")
        assert_problem(r, 403, "certificate_revoked")
        r = await bank.get("/nowhere")
        assert_problem(r, 403, "certificate_revoked")
        # a connection opened before the revocation is refused from its next request on
        r = await bank.call("GET", "/v1/aliases", conn=kept_open)
        assert_problem(r, 403, "certificate_revoked")
    finally:
        kept_open.close()
    # the other bank is not affected
    assert (await api.bank(B).get("/v1/aliases")).status == 200


async def test_retired_certificate_refused(api: Api) -> None:
    ca = SchemeCA.load(api.pki)
    old = ca.credentials(A)
    old_cert = api.pki / "participants" / A / f"tls-{old.tls_serial}.crt"
    old_key = api.pki / "participants" / A / f"tls-{old.tls_serial}.key"
    ca.rotate(A, overlap_days=0)
    r = await Bank(api.server.port, client_context(api.pki, old_cert, old_key)).get("/v1/aliases")
    assert_problem(r, 403, "certificate_expired")
    assert (await api.bank(A).get("/v1/aliases")).status == 200  # the new one works


async def test_scheme_certificate_of_a_non_participant_refused(api: Api) -> None:
    r = await api.bank(C).get("/v1/aliases")
    assert_problem(r, 403, "unknown_participant")
    r = await api.bank(C).get(lookup_path("VPA", "ann@banka"))
    assert_problem(r, 403, "unknown_participant")
    r = await api.bank(C).get("/v1/openapi.json")
    assert_problem(r, 403, "unknown_participant")


async def test_identity_comes_from_the_certificate_only(api: Api) -> None:
    """Headers naming another participant change nothing."""
    bank_a = api.bank(A)

    def call() -> Answer:
        conn = bank_a.connection()
        try:
            body = json.dumps({"type": "VPA", "value": "x@bankb", "account": "1", "name": "X"})
            conn.request(
                "POST",
                "/v1/aliases",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Participant": B,
                    "X-SSL-Client-S-DN": f"CN={B}",
                    "X-Forwarded-For": "10.0.0.1",
                },
            )
            response = conn.getresponse()
            return Answer(response.status, {}, json.loads(response.read()))
        finally:
            conn.close()

    assert (await asyncio.to_thread(call)).status == 201
    r = await api.bank(B).get(lookup_path("VPA", "x@bankb"))
    assert r.body["participant"] == A


async def test_openapi_describes_every_endpoint_and_its_problems(api: Api) -> None:
    r = await api.bank(A).get("/v1/openapi.json")
    assert r.status == 200
    doc = r.body
    paths = doc["paths"]
    assert set(paths) == {
        "/v1/aliases",
        "/v1/aliases/{type}/{value}",
        "/v1/aliases/{type}/{value}/activate",
        "/v1/aliases/{type}/{value}/deactivate",
        "/v1/lookup/{type}/{value}",
        "/v1/claims",
        "/v1/claims/{claim_id}",
        "/v1/claims/{claim_id}/confirm",
        "/v1/claims/{claim_id}/reject",
        "/v1/claims/{claim_id}/cancel",
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"403", "422"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert set(response["content"]) == {PROBLEM}, (path, status)
                    schema = response["content"][PROBLEM]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (path, status)
    lookup = paths["/v1/lookup/{type}/{value}"]["get"]
    assert "429" in lookup["responses"]
    assert lookup["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LookupResult"
    }
    assert "account" not in doc["components"]["schemas"]["LookupResult"]["properties"]
    assert set(doc["components"]["schemas"]["Problem"]["required"]) >= {
        "type",
        "title",
        "status",
        "detail",
        "code",
    }


async def test_server_stops_and_starts_again(api: Api) -> None:
    port = api.server.port
    await api.server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    await api.server.start()
    assert (await api.bank(A).get("/v1/aliases")).status == 200


# --- the operator's commands ---------------------------------------------------------------


@pytest.fixture
def ops_store(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ops.db'}"

    async def prepare() -> None:
        store = open_store(url)
        try:
            await store.migrate()
            await store.upsert_participants(PARTICIPANTS)
        finally:
            await store.close()

    asyncio.run(prepare())
    yield url


def test_import_reports_each_row_and_stores_the_good_ones(
    ops_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "aliases.csv"
    csv_file.write_text(
        "participant,type,value,account,name\n"
        f"{A},VPA,ann@banka,A-1,Ann Ode\n"  # 1 ok
        f"{A},EMAL,not-an-address,A-2,Ann Ode\n"  # 2 malformed e-mail
        f"{B},TELE,+44 20 7946 0958,B-1,Bo Lee\n"  # 3 ok
        f"{B},VPA,ANN@banka,B-2,Ann Ode\n"  # 4 duplicate of row 1
        f"{C},VPA,cy@bankc,C-1,Cy\n"  # 5 not a participant
        f"{A},EVP,,A-3,Ann Ode\n"  # 6 ok, generated
        f"{A},VPA,zed@banka,A 4,Zed\n"  # 7 bad account
        f"{B},TELE,0123,B-3,Bo\n"  # 8 malformed phone
    )
    status = main(["directory", "import", str(csv_file), "--store", ops_store, "--actor", "ops"])
    out = capsys.readouterr().out
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == f"row 1: ok VPA ann@banka -> {A}"
    assert lines[1].startswith("row 2: invalid_alias (value): ")
    assert lines[2] == f"row 3: ok TELE +442079460958 -> {B}"
    assert lines[3].startswith("row 4: duplicate (value): ")
    assert lines[4].startswith("row 5: invalid_participant (participant): ")
    assert lines[5].startswith("row 6: ok EVP ") and lines[5].endswith(f" -> {A}")
    assert lines[6].startswith("row 7: invalid_account (account): ")
    assert lines[7].startswith("row 8: invalid_alias (value): ")
    assert lines[8] == "8 rows: 3 imported, 5 refused"

    assert main(["directory", "list", "--store", ops_store, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(
        (a["participant"], a["type"], a["value"]) for a in listed if a["type"] != "EVP"
    ) == [
        (A, "VPA", "ann@banka"),
        (B, "TELE", "+442079460958"),
    ]
    assert main(["directory", "list", "--store", ops_store, "--participant", B]) == 0
    out = capsys.readouterr().out
    assert "+442079460958" in out and "ann@banka" not in out
    assert out.splitlines()[-1] == "1 aliases"

    # a file of good rows only: exit 0; the same file again: every row a duplicate
    json_file = tmp_path / "more.json"
    json_file.write_text(
        json.dumps(
            [
                {
                    "participant": B,
                    "type": "EMAL",
                    "value": "bo@example.com",
                    "account": "B-5",
                    "name": "Bo Lee",
                },
            ]
        )
    )
    assert main(["directory", "import", str(json_file), "--store", ops_store]) == 0
    assert "1 rows: 1 imported, 0 refused" in capsys.readouterr().out
    assert main(["directory", "import", str(json_file), "--store", ops_store, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["refused"] == 1
    assert report["rows"][0]["code"] == "duplicate" and report["rows"][0]["field"] == "value"


def test_import_refuses_a_malformed_file_and_bad_options(
    ops_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("participant,type,value,account\nBNKAUS33XXX,VPA,a@b,1\n")
    assert main(["directory", "import", str(bad), "--store", ops_store]) == 2
    assert "name" in capsys.readouterr().err
    assert main(["directory", "import", str(tmp_path / "none.csv"), "--store", ops_store]) == 2
    assert "FILE" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text("participant,type,value,account,name\n")
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert main(["directory", "import", str(good), "--store", missing]) == 2
    assert "--store" in capsys.readouterr().err
    assert main(["directory", "list", "--store", ops_store, "--participant", C]) == 2
    assert "--participant" in capsys.readouterr().err


async def test_store_outage_is_a_503_problem(tmp_path: Path, pki: Path) -> None:
    db = tmp_path / "switch.db"
    store = open_store(f"sqlite:///{db}")
    api = await start_api(store, pki, default_limiter())
    try:
        assert (await api.bank(A).get("/v1/aliases")).status == 200
        await store.close()
        db.unlink()
        db.mkdir()  # the database cannot be opened again
        r = await api.bank(A).get("/v1/aliases")
        assert_problem(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
    finally:
        await api.server.stop()
