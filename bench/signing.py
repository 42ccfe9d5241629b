"""XML-DSig benchmark: µs per signature and per verification of a business message.

The message is the ~3.5 KB pacs.008 of examples/pacs.008-bicfi.xml. For each key (ECDSA
P-256, RSA-2048) and each engine of `switch.security.xmldsig` ("native": lxml exclusive
c14n + cryptography; "xmlsec": the C library libxmlsec1 through python-xmlsec; "signxml"),
it measures:

1. sign: unsigned BizMsg bytes in, signed bytes out (parse, c14n, digest, sign, serialise);
2. verify: signed bytes in (hardened parse included), as a participant's connector does;
3. verify_tree: the same on a tree already parsed, what the switch pays on top of the
   parse it does anyway;

and, for scale, the bare `cryptography` sign and verify of ~600 bytes with the same key.
The engines' operations are measured in interleaved rounds, so that load from elsewhere on
a shared machine weighs on each alike and their ratios stay meaningful.
"per payment" is what the switch spends on signatures for one credit transfer: it
verifies 2 inbound messages (pacs.008, pacs.002) and signs 3 outbound ones (pacs.008
forwarded, pacs.002 to each agent).

Run: `.venv/bin/python -m bench.signing [--seconds S] [--engine E]... [--json]`, with E
one of native, xmlsec, signxml (default: all three).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from switch.iso20022 import parse
from switch.security.pki import CertStatus
from switch.security.xmldsig import ENGINES, Engine, Signer, Verifier

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pacs.008-bicfi.xml"
SENDER = "BNKAUS33XXX"


def _measure(fns: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Median of 7 rounds, in µs per call of each function; each round runs each one for
    ~seconds/7 in turn (garbage collector on), so that load from elsewhere on a shared
    machine falls on all of them alike rather than on whichever ran at the time."""
    for fn in fns.values():
        fn()
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    per_round = seconds / 7
    for _ in range(7):
        for name, fn in fns.items():
            n = 0
            start = time.perf_counter()
            while True:
                for _ in range(10):
                    fn()
                n += 10
                elapsed = time.perf_counter() - start
                if elapsed >= per_round:
                    break
            rounds[name].append(elapsed / n * 1e6)
    return {name: sorted(times)[3] for name, times in rounds.items()}


class _Directory:
    """One participant, one certificate, always valid (the trust store's cost is not ours)."""

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert

    def signing_certificates(self, participant: str) -> list[x509.Certificate]:
        return [self.cert] if participant == SENDER else []

    def status(self, cert: x509.Certificate, at: datetime) -> CertStatus:
        return CertStatus.VALID


def _credentials(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SENDER)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _primitives(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, seconds: float
) -> dict[str, float]:
    data = b"x" * 600
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key, ec_pub = key, key.public_key()
        algorithm = ec.ECDSA(hashes.SHA256())
        ec_sig = ec_key.sign(data, algorithm)
        return _measure(
            {
                "sign": lambda: ec_key.sign(data, algorithm),
                "verify": lambda: ec_pub.verify(ec_sig, data, algorithm),
            },
            seconds,
        )
    rsa_key, rsa_pub = key, key.public_key()
    pad = padding.PKCS1v15()
    rsa_sig = rsa_key.sign(data, pad, hashes.SHA256())
    return _measure(
        {
            "sign": lambda: rsa_key.sign(data, pad, hashes.SHA256()),
            "verify": lambda: rsa_pub.verify(rsa_sig, data, pad, hashes.SHA256()),
        },
        seconds,
    )


def bench(seconds: float = 1.0, engines: tuple[Engine, ...] = ENGINES) -> dict[str, float]:
    """Every measurement, in µs (keys `<key>_<engine>_<operation>_us`)."""
    data = EXAMPLE.read_bytes()
    keys: dict[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {
        "ec_p256": ec.generate_private_key(ec.SECP256R1()),
        "rsa_2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    out: dict[str, float] = {"pacs008_bytes": float(len(data))}
    for label, key in keys.items():
        key_pem, cert_pem = _credentials(key)
        for op, us in _primitives(key, seconds).items():
            out[f"{label}_cryptography_{op}_us"] = us
        operations: dict[str, Callable[[], object]] = {}
        for engine in engines:
            signer = Signer(key_pem, cert_pem, engine=engine)
            verifier = Verifier(_Directory(signer.certificate), engine=engine)
            signed = signer.sign(data)
            header = parse(signed).header
            assert header is not None
            root = header.getparent()
            assert root is not None
            verifier.verify_tree(root, SENDER)
            prefix = f"{label}_{engine}"
            out[f"{prefix}_signed_bytes"] = float(len(signed))
            operations[f"{prefix}_sign_us"] = partial(signer.sign, data)
            operations[f"{prefix}_verify_us"] = partial(verifier.verify, signed, SENDER)
            operations[f"{prefix}_verify_tree_us"] = partial(verifier.verify_tree, root, SENDER)
        out.update(_measure(operations, seconds))
        for engine in engines:
            prefix = f"{label}_{engine}"
            out[f"{prefix}_per_payment_us"] = (
                2 * out[f"{prefix}_verify_tree_us"] + 3 * out[f"{prefix}_sign_us"]
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    ap = argparse.ArgumentParser(prog="python -m bench.signing")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--engine", choices=ENGINES, action="append", help="default: all")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    engines: tuple[Engine, ...] = tuple(args.engine) if args.engine else ENGINES
    r = bench(args.seconds, engines)
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"XML-DSig of a {r['pacs008_bytes']:.0f}-byte pacs.008 BizMsg "
        f"(µs per operation, median of 7 interleaved rounds, {os.cpu_count()} CPUs)"
    )
    print(
        f"{'key':<9} {'engine':<13} {'sign':>8} {'verify':>8} {'verify_tree':>12} "
        f"{'per payment':>12} {'payments/s/core':>16} {'vs native':>10}"
    )
    for label in ("ec_p256", "rsa_2048"):
        print(
            f"{label:<9} {'cryptography':<13} {r[f'{label}_cryptography_sign_us']:>8.1f} "
            f"{r[f'{label}_cryptography_verify_us']:>8.1f}"
        )
        for engine in engines:
            p = f"{label}_{engine}"
            per_payment = r[f"{p}_per_payment_us"]
            native = r.get(f"{label}_native_per_payment_us")
            ratio = f"{per_payment / native:>9.2f}x" if native else ""
            print(
                f"{label:<9} {engine:<13} {r[f'{p}_sign_us']:>8.1f} {r[f'{p}_verify_us']:>8.1f} "
                f"{r[f'{p}_verify_tree_us']:>12.1f} {per_payment:>12.1f} "
                f"{1e6 / per_payment:>16.0f} {ratio:>10}"
            )
    print("per payment = 2 verify_tree + 3 sign (signatures only; parsing, rules and I/O apart)")
    print("vs native = per payment relative to the native engine's, measured in the same rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
