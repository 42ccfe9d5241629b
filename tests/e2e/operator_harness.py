"""A switch that has cleared demo payments, with its operator API up over HTTPS.

`operator_switch` runs the real demo (engine, store, simulated banks on the in-process
transport) and keeps it running, issues one token per role (and a second operator, for
maker-checker), and serves the operator API and dashboard on an ephemeral port with a
server certificate of a throwaway scheme CA. `Client` calls it as an operator's tools
do: HTTPS that trusts the scheme CA, a bearer token, one connection per request (in a
thread: the server runs in the test's event loop).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switch.api.operators import start_operator_api
from switch.demo import Demo, DemoReport
from switch.operations import Role
from switch.operator_service import OperatorService
from switch.security.pki import SchemeCA
from switch.settings import load_demo_aliases, load_demo_participants, load_settings

PROBLEM = "application/problem+json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes = b""

    @property
    def code(self) -> Any:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def field(self) -> Any:
        return self.body.get("field") if isinstance(self.body, dict) else None


@dataclass
class Client:
    """An operator's HTTPS client of the API (trusting the scheme CA)."""

    port: int
    ca: Path
    token: str | None = None

    def call_sync(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> Answer:
        context = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("localhost", self.port, context=context, timeout=20)
        try:
            headers = {"Accept": "application/json"}
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            hdrs = {k.lower(): v for k, v in response.getheaders()}
            parsed: Any = None
            if payload and "json" in hdrs.get("content-type", ""):
                parsed = json.loads(payload)
            return Answer(response.status, hdrs, parsed, payload)
        finally:
            conn.close()

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        return await asyncio.to_thread(self.call_sync, method, path, body, **kw)

    async def get(self, path: str) -> Answer:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None) -> Answer:
        return await self.call("POST", path, body)

    def as_(self, token: str | None) -> Client:
        return Client(self.port, self.ca, token)


@dataclass
class OperatorSwitch:
    """The running switch, its operator service and API, and a token per role."""

    demo: Demo
    report: DemoReport
    service: OperatorService
    port: int
    ca: Path
    pki: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def client(self, who: str | None = None) -> Client:
        return Client(self.port, self.ca, None if who is None else self.tokens[who])


@asynccontextmanager
async def operator_switch(
    tmp_path: Path, store_url: str, *, payments: int = 150, seed: int = 7
) -> AsyncIterator[OperatorSwitch]:
    """The demo cleared on `store_url`, kept running, with the operator API served."""
    settings = load_settings(store=store_url, response_timeout=0.4)
    demo = Demo(
        settings=settings,
        participants=load_demo_participants(None),
        seed=seed,
        aliases=load_demo_aliases(None),
    )
    report = await demo.run(payments, keep_running=True)
    try:
        pki = tmp_path / "pki"
        ca = SchemeCA.init(pki)
        service = OperatorService(demo.engine)
        tokens = {}
        for name, role in (
            ("ada", Role.ADMIN),
            ("olga", Role.OPERATOR),
            ("otto", Role.OPERATOR),
            ("vera", Role.VIEWER),
        ):
            _, tokens[name] = await service.create_token(name, role, None)
        server = await start_operator_api(service, pki_dir=pki, host="127.0.0.1", port=0)
        try:
            yield OperatorSwitch(
                demo=demo,
                report=report,
                service=service,
                port=server.port,
                ca=ca.ca_cert_path,
                pki=pki,
                tokens=tokens,
            )
        finally:
            await server.stop()
            await service.stop()
    finally:
        await demo.shutdown()
