"""Message-layer benchmark: µs per message on the hot path.

1. parse + validate + extract: a ~3 KB pacs.008 business message (examples/pacs.008-bicfi.xml)
   through `parse`, `validate` against the scheme schemas, and `views.credit_transfer`;
2. build + serialise: a pacs.002 RJCT with reason and agents, with its AppHdr, as bytes.

Run: `.venv/bin/python -m bench.messages [--seconds S] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from switch.iso20022 import MessageType, build, default_registry, parse, validate, views

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pacs.008-bicfi.xml"


def _measure(fn: Callable[[], object], seconds: float) -> float:
    """Median of 7 rounds, in µs per call; each round runs ~seconds/7, garbage collector on."""
    fn()
    rounds: list[float] = []
    per_round = seconds / 7
    for _ in range(7):
        n = 0
        start = time.perf_counter()
        while True:
            for _ in range(100):
                fn()
            n += 100
            elapsed = time.perf_counter() - start
            if elapsed >= per_round:
                break
        rounds.append(elapsed / n * 1e6)
    return sorted(rounds)[3]


def bench(seconds: float = 2.0) -> dict[str, float]:
    """Both measurements, in µs per message."""
    data = EXAMPLE.read_bytes()
    registry = default_registry()
    registry.load_all()

    def parse_validate_extract() -> object:
        msg = parse(data)
        if validate(msg, registry):
            raise AssertionError("example must be valid")
        assert msg.document is not None and msg.header is not None
        views.header(msg.header)
        return views.credit_transfer(msg.document)

    switch = views.Agent(bicfi="SWCHUS33XXX")
    bank = views.Agent(bicfi="BNKAUS33XXX")
    now = datetime.now(UTC)

    def build_serialise() -> bytes:
        doc = build.status_report(
            msg_id="SW18c5f3a9b2e00000042",
            created=now,
            status="RJCT",
            original_msg_id="BNKA20261121000001",
            original_end_to_end_id="E2E-20261121-000001",
            original_tx_id="TX-20261121-000001",
            original_uetr="8a562c67-ca16-48ba-b074-65581be6f011",
            reason="AC03",
            instructing_agent=switch,
            instructed_agent=bank,
        )
        hdr = build.header(
            sender=switch,
            receiver=bank,
            biz_msg_idr="SW18c5f3a9b2e00000043",
            mtype=MessageType.PACS_002,
            created=now,
        )
        return build.business_message(hdr, doc)

    return {
        "pacs008_bytes": float(len(data)),
        "parse_validate_extract_us": _measure(parse_validate_extract, seconds),
        "build_serialise_pacs002_us": _measure(build_serialise, seconds),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    ap = argparse.ArgumentParser(prog="python -m bench.messages")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = bench(args.seconds)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"pacs.008 ({r['pacs008_bytes']:.0f} bytes) parse+validate+extract: "
            f"{r['parse_validate_extract_us']:.1f} µs/message"
        )
        print(f"pacs.002 build+serialise: {r['build_serialise_pacs002_us']:.1f} µs/message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
