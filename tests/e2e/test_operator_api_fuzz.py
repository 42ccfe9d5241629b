"""Schemathesis against the operator API of a switch that has cleared the demo's payments.

Every operation of the OpenAPI document (`/v1/openapi.json`) is called over HTTPS with
the admin token, so the state-changing ones run too: requests that fit the document and
requests that break it (a wrong type, a missing field, a body that is not JSON, no token).
The switch may refuse any of them (4xx) but must never answer a server error, and every
answer must be one the document describes: its status, media type, body schema and
headers. An operation with a path parameter is also called on a real participant,
payment, pending approval and token, so that suspend, resume, limit, fund, defund,
approve, reject and revoke change something rather than answer 404.

The server runs in the test's event loop; schemathesis (synchronous, `requests`) runs
in a thread. Hypothesis is derandomized so CI repeats the same requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Err, Ok

from switch.operations import Role
from tests.e2e.operator_harness import OperatorSwitch, operator_switch

pytestmark = pytest.mark.slow

MAX_EXAMPLES: Final = 20
"""Requests per operation, mode and path parameter choice."""

SKIPPED_CHECKS: Final = (
    # Schema-valid input the switch refuses with 422: an opaque page cursor it never gave,
    # an amount of zero or with more decimals than the scheme currency has. A pattern
    # cannot say what a cursor is, and the 422 names the field.
    "positive_data_acceptance",
)
"""Schemathesis's checks that do not apply; every other one runs on every answer."""


async def test_no_request_gets_a_server_error_or_an_undocumented_answer(tmp_path: Path) -> None:
    async with operator_switch(tmp_path, f"sqlite:///{tmp_path / 'switch.db'}") as switch:
        known = await _real_values(switch)
        failures = await asyncio.to_thread(_fuzz, switch, known)
    assert not failures, "\n\n".join(failures)


async def _real_values(switch: OperatorSwitch) -> dict[str, str]:
    """A value that exists for each path parameter of the API."""
    service = switch.service
    assert service.threshold is not None
    over = service.money(service.threshold + 100)
    asked = await switch.client("olga").post(f"/v1/participants/{_B}/fund", {"amount": over})
    assert asked.status == 202, asked.body
    payments = await switch.client("vera").get("/v1/payments?limit=1")
    token, _ = await service.create_token("tess", Role.VIEWER, None)
    return {
        "participant": _B,
        "key": payments.body["payments"][0]["id"],
        "approval": asked.body["approval"]["id"],
        "token_id": token.id,
    }


_B: Final = "BNKBUS33XXX"


def _fuzz(switch: OperatorSwitch, known: dict[str, str]) -> list[str]:
    config = schemathesis.Config.from_dict(
        {
            "tls-verify": str(switch.ca),
            "auth": {"openapi": {"HTTPBearer": {"bearer": switch.tokens["ada"]}}},
            "checks": {name: {"enabled": False} for name in SKIPPED_CHECKS},
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{switch.url}/v1/openapi.json", config=config, verify=str(switch.ca)
    )
    results = list(schema.get_all_operations())
    assert not [r.err() for r in results if isinstance(r, Err)]
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 25
    failures = []
    for operation in operations:
        real = {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}
        for mode in GenerationMode:
            for path_parameters in [None, real] if real else [None]:
                found = _fuzz_one(operation, mode, path_parameters)
                if found is not None:
                    failures.append(found)
    return failures


def _fuzz_one(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None,
) -> str | None:
    """What is wrong with `operation`'s answers to requests of `mode` (None: nothing)."""

    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def call(case: Case[Any]) -> None:
        case.call_and_validate()

    try:
        call()
    except Unsatisfiable:
        return None  # negative mode: nothing in this operation to get wrong
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a group of failed checks
        on = f" on {path_parameters}" if path_parameters else ""
        return f"{operation.label} ({mode} requests{on}):\n{exc}"
    return None
