"""The scheme PKI: CA, participant credentials, revocation and CRL, expiry, rotation, CLI."""

from __future__ import annotations

import json
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from switch.cli import main
from switch.security.pki import (
    CLOCK_SKEW,
    DOCUMENT_SIGNING,
    CertStatus,
    PkiError,
    SchemeCA,
    TrustStore,
    load_credentials,
    load_private_key,
)

A, B, SWITCH = "BNKAUS33XXX", "BNKBUS44XXX", "SWCHUS33XXX"
T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
"""Every test issues at T0 (the CA too), so validity windows are known exactly."""

DAY = timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> SchemeCA:
    """A fresh scheme CA in a temporary PKI directory."""
    return SchemeCA.init(tmp_path / "pki", now=T0)


def read_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def purposes(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def assert_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Check the certificate's signature with the issuer's public key, by hand."""
    assert cert.issuer == issuer.subject
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def crl_of(ca: SchemeCA) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(ca.crl_path.read_bytes())


# --- the CA --------------------------------------------------------------------------------


def test_init_is_idempotent_and_never_replaces_the_ca(tmp_path: Path) -> None:
    first = SchemeCA.init(tmp_path / "pki", now=T0)
    key_bytes = first.ca_key_path.read_bytes()
    cert_bytes = first.ca_cert_path.read_bytes()

    second = SchemeCA.init(tmp_path / "pki", name="Another name")

    assert second.ca_key_path.read_bytes() == key_bytes
    assert second.ca_cert_path.read_bytes() == cert_bytes
    assert cn(second.certificate) == "RTP Switch Scheme CA"
    assert stat.S_IMODE(first.ca_key_path.stat().st_mode) == 0o600
    ca_cert = first.certificate
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert_signed_by(ca_cert, ca_cert)
    assert len(crl_of(first)) == 0


def test_load_without_a_ca_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="no scheme CA") as info:
        SchemeCA.load(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


def test_init_refuses_to_overwrite_a_half_ca(tmp_path: Path) -> None:
    ca = SchemeCA.init(tmp_path / "pki", now=T0)
    ca.ca_key_path.unlink()
    with pytest.raises(PkiError, match=r"ca\.key"):
        SchemeCA.init(tmp_path / "pki")
    assert not ca.ca_key_path.exists()  # nothing was generated in its place


# --- issuing -------------------------------------------------------------------------------


def test_issue_ec_credentials_chain_to_the_ca_with_the_right_roles(ca: SchemeCA) -> None:
    creds = ca.issue(A, now=T0)

    tls, signing = read_cert(creds.tls_cert), read_cert(creds.signing_cert)
    for cert, key_path in ((tls, creds.tls_key), (signing, creds.signing_key)):
        assert_signed_by(cert, ca.certificate)
        assert cn(cert) == A
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp256r1"
        assert load_private_key(key_path).public_key() == public
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert cert.serial_number.bit_length() >= 64
        assert cert.not_valid_before_utc == T0 - CLOCK_SKEW
        assert cert.not_valid_after_utc == T0 + 365 * DAY
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert purposes(tls) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert purposes(signing) == [DOCUMENT_SIGNING]
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in purposes(signing)
    usage = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert creds.signing_serial == signing.serial_number
    assert creds.tls_serial == tls.serial_number
    assert creds.ca_cert == ca.ca_cert_path
    assert load_credentials(ca.directory, A) == creds


def test_issue_rsa_credentials_are_2048_bit_and_sign(ca: SchemeCA) -> None:
    creds = ca.issue(B, key_type="rsa", now=T0)
    for path in (creds.tls_cert, creds.signing_cert):
        public = read_cert(path).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == 2048
        assert_signed_by(read_cert(path), ca.certificate)
    key = load_private_key(creds.signing_key)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(b"<AppHdr/>", padding.PKCS1v15(), hashes.SHA256())
    public = read_cert(creds.signing_cert).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, b"<AppHdr/>", padding.PKCS1v15(), hashes.SHA256())
    assert creds.key_type == "rsa"


@pytest.mark.parametrize("bad", ["BNK-AUS33", "", "B" * 36, "BNK AUS", "BNKÄUS33XXX", "../x"])
def test_bad_participant_ids_are_refused_by_name(ca: SchemeCA, bad: str) -> None:
    with pytest.raises(PkiError, match="participant id") as info:
        ca.issue(bad)
    assert repr(bad) in str(info.value)
    assert not (ca.directory / "participants").exists()


def test_participant_ids_are_upper_cased(ca: SchemeCA) -> None:
    creds = ca.issue("bnkaus33xxx", now=T0)
    assert creds.participant == A
    assert cn(read_cert(creds.tls_cert)) == A
    assert creds.tls_cert.parent.name == A


def test_bad_key_type_and_days_are_refused(ca: SchemeCA) -> None:
    with pytest.raises(PkiError, match="key type 'dsa'"):
        ca.issue(A, key_type="dsa")
    with pytest.raises(PkiError, match="days"):
        ca.issue(A, days=0)
    assert ca.certificates() == []


def test_the_switch_gets_credentials_like_any_participant(ca: SchemeCA) -> None:
    creds = ca.issue(SWITCH, now=T0)
    store = ca.trust_store()
    [signing] = store.signing_certificates(SWITCH)
    assert signing.serial_number == creds.signing_serial
    assert store.participant_of(signing) == SWITCH
    assert store.participant_of(read_cert(creds.tls_cert)) == SWITCH
    assert store.signing_certificates(SWITCH.lower()) == [signing]
    assert store.signing_certificates(A) == []
    assert store.signing_certificates("<not an id>") == []


def test_ensure_returns_the_current_credentials_until_they_are_unusable(ca: SchemeCA) -> None:
    first = ca.ensure(A, now=T0)
    assert ca.ensure(A, now=T0 + DAY) == first
    assert len(ca.certificates(A)) == 2

    expired = ca.ensure(A, now=T0 + 400 * DAY)  # past notAfter: reissued
    assert expired.signing_serial != first.signing_serial

    ca.revoke(A, expired.signing_serial, now=T0 + 401 * DAY)
    again = ca.ensure(A, now=T0 + 401 * DAY)
    assert again.signing_serial not in (first.signing_serial, expired.signing_serial)

    rsa_creds = ca.ensure(A, key_type="rsa", now=T0 + 401 * DAY)  # another key type asked
    assert rsa_creds.key_type == "rsa" and rsa_creds.signing_serial != again.signing_serial


def test_concurrent_issues_lose_no_certificate(ca: SchemeCA) -> None:
    ids = [f"BNK{i}US33XXX" for i in range(6)]
    errors: list[BaseException] = []

    def issue(pid: str) -> None:
        try:
            SchemeCA.load(ca.directory).issue(pid, now=T0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=issue, args=(pid,)) for pid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {r.participant for r in ca.certificates()} == set(ids)
    assert len(ca.certificates()) == 2 * len(ids)


# --- status: revocation, expiry, other CAs -------------------------------------------------


def test_revoke_makes_the_certificate_revoked_and_lists_it_in_a_signed_crl(ca: SchemeCA) -> None:
    creds = ca.issue(A, now=T0)
    ca.issue(B, now=T0)
    store = TrustStore.load(ca.directory)
    signing = read_cert(creds.signing_cert)
    assert store.status(signing, T0 + DAY) is CertStatus.VALID

    revoked = ca.revoke(A, creds.signing_serial, reason="key-compromise", now=T0 + DAY)

    assert revoked == [creds.signing_serial]
    assert store.status(signing, T0 + 2 * DAY) is CertStatus.VALID  # not reloaded yet
    store.reload()
    assert store.status(signing, T0 + 2 * DAY) is CertStatus.REVOKED
    assert store.status(signing, T0) is CertStatus.REVOKED  # revocation is permanent
    assert store.status(read_cert(creds.tls_cert), T0 + 2 * DAY) is CertStatus.VALID

    crl = crl_of(ca)
    ca_key = ca.certificate.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.issuer == ca.certificate.subject
    assert crl.is_signature_valid(ca_key)
    entry = crl.get_revoked_certificate_by_serial_number(creds.signing_serial)
    assert entry is not None
    assert entry.revocation_date_utc == T0 + DAY
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert len(crl) == 1


def test_revoke_all_of_a_participant(ca: SchemeCA) -> None:
    old = ca.issue(A, now=T0)
    new = ca.issue(A, now=T0)
    other = ca.issue(B, now=T0)
    revoked = ca.revoke(A, now=T0)
    assert sorted(revoked) == sorted(
        [old.tls_serial, old.signing_serial, new.tls_serial, new.signing_serial]
    )
    assert ca.revoke(A, now=T0) == []  # already revoked: nothing new
    crl_serials = {e.serial_number for e in crl_of(ca)}
    assert crl_serials == set(revoked)
    store = ca.trust_store()
    assert [store.status(c, T0) for c in store.signing_certificates(A)] == [
        CertStatus.REVOKED,
        CertStatus.REVOKED,
    ]
    assert store.status(read_cert(other.signing_cert), T0) is CertStatus.VALID


def test_revoke_refuses_unknown_participant_serial_and_reason(ca: SchemeCA) -> None:
    creds = ca.issue(A, now=T0)
    other = ca.issue(B, now=T0)
    with pytest.raises(PkiError, match="BNKZZZ99XXX"):
        ca.revoke("BNKZZZ99XXX")
    with pytest.raises(PkiError, match=f"serial {other.signing_serial} is not .* {A}"):
        ca.revoke(A, other.signing_serial)
    with pytest.raises(PkiError, match="reason 'stolen'"):
        ca.revoke(A, creds.signing_serial, reason="stolen")
    assert len(crl_of(ca)) == 0


def test_expiry_and_not_yet_valid(ca: SchemeCA) -> None:
    creds = ca.issue(A, days=30, now=T0)
    store = ca.trust_store()
    cert = read_cert(creds.signing_cert)
    assert store.status(cert, T0) is CertStatus.VALID
    assert store.status(cert, T0 + 30 * DAY) is CertStatus.VALID  # notAfter is inclusive
    assert store.status(cert, T0 + 30 * DAY + timedelta(seconds=1)) is CertStatus.EXPIRED
    assert store.status(cert, T0 - CLOCK_SKEW - timedelta(seconds=1)) is CertStatus.NOT_YET_VALID
    with pytest.raises(ValueError, match="time zone"):
        store.status(cert, datetime(2031, 3, 2))  # naive: refused


def test_certificates_never_outlive_the_ca(tmp_path: Path) -> None:
    ca = SchemeCA.init(tmp_path / "pki", days=10, now=T0)
    creds = ca.issue(A, days=365, now=T0)
    assert read_cert(creds.tls_cert).not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_a_certificate_from_another_ca_is_unknown(tmp_path: Path, ca: SchemeCA) -> None:
    ca.issue(A, now=T0)
    # Same CA name, same participant id, different key: a forgery of our CA.
    impostor = SchemeCA.init(tmp_path / "impostor", now=T0)
    forged = impostor.issue(A, now=T0)
    store = ca.trust_store()
    cert = read_cert(forged.signing_cert)
    assert cert.issuer == ca.certificate.subject
    assert store.status(cert, T0) is CertStatus.UNKNOWN
    assert store.participant_of(cert) is None
    assert store.participant_of(read_cert(ca.credentials(A).tls_cert)) == A


def test_a_crl_not_signed_by_the_ca_is_refused(tmp_path: Path, ca: SchemeCA) -> None:
    impostor = SchemeCA.init(tmp_path / "impostor", now=T0)
    ca.crl_path.write_bytes(impostor.crl_path.read_bytes())
    with pytest.raises(PkiError, match=r"crl\.pem: not signed by the scheme CA"):
        TrustStore.load(ca.directory)


# --- rotation ------------------------------------------------------------------------------


def test_rotation_overlap_then_the_old_keys_expire(ca: SchemeCA) -> None:
    old = ca.issue(A, now=T0)
    new = ca.rotate(A, overlap_days=7, now=T0 + 100 * DAY)
    store = ca.trust_store()

    old_signing, new_signing = read_cert(old.signing_cert), read_cert(new.signing_cert)
    assert store.signing_certificates(A) == [old_signing, new_signing]
    assert load_credentials(ca.directory, A) == new
    during = T0 + 103 * DAY
    assert store.status(old_signing, during) is CertStatus.VALID
    assert store.status(new_signing, during) is CertStatus.VALID
    assert store.status(read_cert(old.tls_cert.parent / f"tls-{old.tls_serial}.crt"), during) is (
        CertStatus.VALID
    )

    after = T0 + 107 * DAY
    assert store.status(old_signing, after) is CertStatus.EXPIRED
    assert store.status(new_signing, after) is CertStatus.VALID
    assert store.status(read_cert(new.tls_cert), after) is CertStatus.VALID

    # Once due, the CRL lists the retired certificates (superseded) for the broker, and
    # the store still calls them EXPIRED, not REVOKED.
    assert len(crl_of(ca)) == 0
    ca.refresh_crl(now=after)
    listed = {e.serial_number: e for e in crl_of(ca)}
    assert set(listed) == {old.signing_serial, old.tls_serial}
    reason = listed[old.tls_serial].extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.superseded
    store.reload()
    assert store.status(old_signing, during) is CertStatus.VALID
    assert store.status(old_signing, after) is CertStatus.EXPIRED


def test_rotation_never_extends_an_older_certificate(ca: SchemeCA) -> None:
    old = ca.issue(A, days=30, now=T0)
    ca.rotate(A, overlap_days=60, now=T0 + 20 * DAY)
    record = {r.serial: r for r in ca.certificates(A)}[old.signing_serial]
    assert record.retire_at == T0 + 30 * DAY  # its own expiry comes first

    ca.rotate(A, overlap_days=1, now=T0 + 21 * DAY)  # a second rotation shortens it
    record = {r.serial: r for r in ca.certificates(A)}[old.signing_serial]
    assert record.retire_at == T0 + 22 * DAY


def test_rotate_needs_existing_credentials(ca: SchemeCA) -> None:
    with pytest.raises(PkiError, match=f"{A} has no credentials"):
        ca.rotate(A)


# --- server certificate and a real mTLS handshake ------------------------------------------


def test_server_certificate_names_and_roles(ca: SchemeCA) -> None:
    cert_path, key_path = ca.issue_server(["rabbitmq", "localhost", "127.0.0.1", "::1"])
    cert = read_cert(cert_path)
    assert_signed_by(cert, ca.certificate)
    assert purposes(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["rabbitmq", "localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    assert ca.ensure_server(["localhost"]) == (cert_path, key_path)
    assert read_cert(cert_path) == cert  # covered already: not reissued
    ca.ensure_server(["switch.example"])
    assert read_cert(cert_path) != cert
    with pytest.raises(PkiError, match="'bad_host!'"):
        ca.issue_server(["bad_host!"])


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """Run a TLS handshake between the two contexts in memory."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3 checks the client certificate after the client thinks it is done.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def test_mtls_handshake_accepts_the_tls_cert_and_refuses_the_signing_cert(
    tmp_path: Path,
) -> None:
    ca = SchemeCA.init(tmp_path / "pki")  # valid now, for the real TLS stack
    creds = ca.issue(A)
    server_cert, server_key = ca.issue_server(["localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    server_ctx.load_verify_locations(ca.ca_cert_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    def client(cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca.ca_cert_path)
        ctx.load_cert_chain(cert, key)
        return ctx

    _handshake(server_ctx, client(creds.tls_cert, creds.tls_key))
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, client(creds.signing_cert, creds.signing_key))


# --- the command line ----------------------------------------------------------------------


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "pki")
    assert main(["pki", "init", "--dir", d, "--name", "Test Scheme CA"]) == 0
    assert "created scheme CA CN=Test Scheme CA" in capsys.readouterr().out
    key = (tmp_path / "pki" / "ca" / "ca.key").read_bytes()
    assert main(["pki", "init", "--dir", d]) == 0
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / "pki" / "ca" / "ca.key").read_bytes() == key

    assert main(["pki", "issue", A, "--dir", d]) == 0
    out = capsys.readouterr().out
    creds = load_credentials(Path(d), A)
    assert str(creds.tls_cert) in out and str(creds.signing_key) in out
    assert main(["pki", "issue", B, "--key-type", "rsa", "--days", "30", "--dir", d]) == 0
    capsys.readouterr()

    assert main(["pki", "rotate", A, "--overlap-days", "2", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert f"retires     signing {creds.signing_serial}" in out

    assert main(["pki", "revoke", B, "--reason", "key_compromise", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert out.count("revoked ") == 2

    assert main(["pki", "server", "localhost", "127.0.0.1", "--dir", d]) == 0
    assert "server.crt" in capsys.readouterr().out
    assert main(["pki", "crl", "--dir", d]) == 0
    capsys.readouterr()

    assert main(["pki", "list", "--json", "--dir", d]) == 0
    rows = json.loads(capsys.readouterr().out)
    status = {(r["participant"], r["kind"], r["status"]) for r in rows}
    assert (B, "signing", "revoked") in status
    assert (None, "server", "valid") in status
    assert sum(1 for r in rows if r["participant"] == A) == 4
    assert main(["pki", "list", A, "--dir", d]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("SERIAL") and len(table) == 5

    store = TrustStore.load(Path(d))
    assert store.status(store.signing_certificates(B)[0], datetime.now(UTC)) is (CertStatus.REVOKED)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["pki", "revoke", "BNKZZZ99XXX"], "BNKZZZ99XXX"),
        (["pki", "revoke", A, "--serial", "12345"], "serial 12345"),
        (["pki", "revoke", A, "--reason", "stolen"], "reason 'stolen'"),
        (["pki", "issue", A, "--key-type", "dsa"], "key type 'dsa'"),
        (["pki", "issue", "BNK-AUS"], "participant id 'BNK-AUS'"),
        (["pki", "issue", A, "--days", "0"], "days"),
        (["pki", "rotate", B], f"{B} has no credentials"),
        (["pki", "list", B], B),
        (["pki", "server", "no_such host"], "hostname 'no_such host'"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    d = str(tmp_path / "pki")
    assert main(["pki", "init", "--dir", d]) == 0
    assert main(["pki", "issue", A, "--dir", d]) == 0
    capsys.readouterr()

    assert main([*argv, "--dir", d]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("rtpswitch pki: error: ")
    assert named in err


def test_cli_uses_rtpswitch_pki_env_and_needs_a_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTPSWITCH_PKI", str(tmp_path / "env-pki"))
    assert main(["pki", "issue", A]) == 2
    assert "no scheme CA" in capsys.readouterr().err
    assert main(["pki", "init"]) == 0
    assert main(["pki", "issue", A]) == 0
    assert (tmp_path / "env-pki" / "participants" / A / "current.json").is_file()
