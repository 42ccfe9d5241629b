"""`rtpswitch demo` end to end, on SQLite and on PostgreSQL, as the README runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switch.cli import main
from switch.iso20022 import parse, validate
from tests.oracle import base_errors


def test_demo_json_clears_the_mix_and_every_message_is_valid(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "messages"
    args = ["demo", "--store", store_url, "--payments", "120", "--timeout", "0.5"]
    assert main([*args, "--seed", "7", "--json", "--dump-messages", str(dump)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("payments", "by_status", "by_reason", "positions", "conservation_ok"):
        assert key in report
    assert report["payments"] == 120
    assert report["conservation_ok"] is True
    assert report["payments_per_second"] > 0
    assert sum(report["by_status"].values()) == 120
    assert "NONE" not in report["by_status"]
    # Every scenario of the mix produced its outcome.
    expected = {
        "accepted": "ACSC",
        "creditor_reject": "RJCT AC0",
        "timeout": "RJCT AB05",
        "late": "RJCT AB05",
        "twice": "ACSC",
        "duplicate": "RJCT DUPL",
        "insufficient": "RJCT AM04",
        "unknown_agent": "RJCT RC04",
        "over_limit": "RJCT AM02",
        "alias": "ACSC",
        "unknown_alias": "RJCT BE23",
    }
    assert report["by_reason"].get("BE23", 0) > 0
    for scenario, outcome in expected.items():
        got = report["by_scenario"][scenario]
        assert all(k.startswith(outcome) for k in got), (scenario, got)
    files = sorted(dump.iterdir())
    assert len(files) > 120 * 3
    directions = {f.name.split("-")[1] for f in files}
    assert directions == {"in", "out"}
    for f in files:
        raw = f.read_bytes()
        assert validate(parse(raw)) == [], f.name
        assert base_errors(raw) == [], f.name
