"""HTTPS with mutual TLS for the switch's APIs: only the scheme's participants get in.

Theory of operation. The TLS handshake does the first half of the work: the server's
`SSLContext` (`server_ssl_context`) speaks TLS 1.2 or later with forward-secret AEAD
suites only, and requires a client certificate that chains to the scheme CA, so a
client without one, or with one from another CA, never gets to send a request. What
the handshake cannot know is what the scheme decided after the certificate was issued:
a revocation, or a retirement after a key rotation. `TrustGate` asks the scheme's
`TrustStore` about the certificate at every request, re-reading the CA's index and CRL
whenever the files change, so a revocation made by `rtpswitch pki revoke` in another
process is in force at the next request, even on a connection opened before it.

uvicorn does not tell the application which certificate the client presented.
`MutualTlsH11Protocol`, uvicorn's h11 protocol with one more step when a connection is
made, reads the peer certificate from the connection's `ssl_object` and gives every
request on that connection the ASGI "tls" extension (`scope["extensions"]["tls"]`:
`client_cert_chain` as PEM, `client_cert_name` as an RFC 4514 string,
`client_cert_error`, `tls_version`, `cipher_suite`, `server_cert`). The gate's verdict
goes into `client_cert_error`: None for a certificate the scheme still honours, else
what is wrong with it (`revoked`, `expired`, `not-yet-valid`, `unknown`). Applications
read the extension with `client_certificate(scope)` and refuse a request whose
certificate carries an error; they never take the caller's identity from a header.

`ApiServer` runs an ASGI application this way on one listening socket, without taking
over the process's signals or logging (it runs beside the engine in `rtpswitch run`),
and can be started and stopped any number of times in one event loop (tests use an
ephemeral port: `port=0`, then `server.port`). `serve` builds the TLS context from the
scheme PKI directory and returns a started server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, cast

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

from switch.security.pki import CertStatus, PkiError, SchemeCA, TrustStore

__all__ = [
    "DEFAULT_HOSTNAMES",
    "TLS_CIPHERS",
    "ApiServer",
    "CertificateCheck",
    "ClientCertificate",
    "MutualTlsH11Protocol",
    "TrustGate",
    "client_certificate",
    "scheme_ssl_context",
    "serve",
    "server_ssl_context",
]

log = logging.getLogger("rtpswitch.api")

DEFAULT_HOSTNAMES: Final = ("localhost", "127.0.0.1")
"""Names the API's server certificate covers unless told otherwise (as the broker's)."""

TLS_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites offered: ephemeral key exchange and AEAD only (TLS 1.3 has only such)."""

_TLS_VERSIONS: Final[Mapping[str, int]] = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
"""Protocol names as Python reports them -> the version numbers on the wire."""

CertificateCheck = Callable[[x509.Certificate], str | None]
"""Given a client certificate the handshake verified: None if usable now, else why not."""


# --- the TLS context ---------------------------------------------------------------------


def server_ssl_context(
    *, certfile: Path | str, keyfile: Path | str, cafile: Path | str | None
) -> ssl.SSLContext:
    """A server context: TLS >= 1.2; client certificates required, issued by `cafile`
    (None: no client certificate is asked for)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(certfile=os.fspath(certfile), keyfile=os.fspath(keyfile))
    if cafile is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=os.fspath(cafile))
    return context


def scheme_ssl_context(
    pki_dir: Path | str,
    *,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    client_certificates: bool = True,
) -> ssl.SSLContext:
    """The server context of the scheme PKI in `pki_dir`.

    The server pair is the scheme's current one if it is valid and covers `hostnames`,
    else a new one (`SchemeCA.ensure_server`); clients must present a certificate of the
    scheme CA unless `client_certificates` is False (the operator API, whose callers
    are people with tokens). PkiError if there is no CA in `pki_dir`.
    """
    ca = SchemeCA.load(Path(pki_dir))
    certfile, keyfile = ca.ensure_server(list(hostnames))
    cafile = ca.ca_cert_path if client_certificates else None
    return server_ssl_context(certfile=certfile, keyfile=keyfile, cafile=cafile)


# --- what the scheme says about a certificate --------------------------------------------


class TrustGate:
    """Whether the scheme honours a client certificate now: not revoked, retired or expired.

    Re-reads the trust store when the CA's index or CRL file changes (checked at every
    call, by their size, inode and modification time), so revocations take effect at once.
    """

    def __init__(self, pki_dir: Path | str, *, clock: Callable[[], datetime] | None = None) -> None:
        self.pki_dir = Path(pki_dir)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._files = (self.pki_dir / "ca" / "index.json", self.pki_dir / "ca" / "crl.pem")
        self._seen = self._stamp()
        self.trust = TrustStore.load(self.pki_dir)

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._files:
            try:
                st = path.stat()
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _refresh(self) -> None:
        stamp = self._stamp()
        if stamp == self._seen:
            return
        try:
            self.trust.reload()
        except PkiError as exc:
            # A file half-way through being replaced, or broken: keep what we knew and
            # look again at the next request.
            log.warning("trust store not reloaded: %s", exc)
            return
        self._seen = stamp

    def status(self, cert: x509.Certificate) -> CertStatus:
        """What the scheme says `cert` is worth now."""
        self._refresh()
        return self.trust.status(cert, self._clock())

    def __call__(self, cert: x509.Certificate) -> str | None:
        """None if the scheme honours `cert` now, else its status (`revoked`, `expired` ...)."""
        status = self.status(cert)
        return None if status is CertStatus.VALID else status.value


# --- the ASGI "tls" extension --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The client certificate of a request, as the TLS layer verified it."""

    certificate: x509.Certificate
    common_name: str | None
    """The subject's CN: for a scheme participant certificate, the participant id."""
    error: str | None
    """None if the certificate is usable, else why not (`client_cert_error`)."""


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=1024)
def _parse_pem(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def client_certificate(scope: Mapping[str, Any]) -> ClientCertificate | None:
    """The request's client certificate from the ASGI "tls" extension; None if it has none."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls")
    if not isinstance(tls, Mapping):
        return None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        cert = _parse_pem(str(chain[0]))
    except ValueError:
        return None
    error = tls.get("client_cert_error")
    return ClientCertificate(
        certificate=cert,
        common_name=_common_name(cert),
        error=None if error is None else str(error),
    )


@functools.lru_cache(maxsize=16)
def _cipher_ids(context: ssl.SSLContext) -> Mapping[str, int]:
    """Cipher suite names of `context` -> their 16-bit IANA numbers."""
    return {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}


def _tls_info(ssl_object: ssl.SSLObject, server_pem: str | None) -> dict[str, Any]:
    """The connection's part of the "tls" extension (the client_cert_error is per request)."""
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if der:
        cert = x509.load_der_x509_certificate(der)
        chain.append(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
        name = cert.subject.rfc4514_string()
    cipher = ssl_object.cipher()
    suite = None if cipher is None else _cipher_ids(ssl_object.context).get(cipher[0])
    version = ssl_object.version()
    return {
        "server_cert": server_pem,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None if der else "no client certificate",
        "tls_version": None if version is None else _TLS_VERSIONS.get(version),
        "cipher_suite": suite,
    }


def _with_tls(
    app: ASGI3Application, info: Mapping[str, Any], check: CertificateCheck | None
) -> ASGI3Application:
    """`app`, with the "tls" extension added to the scope of every request."""
    chain = info["client_cert_chain"]
    cert = _parse_pem(chain[0]) if chain else None

    async def tls_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] in ("http", "websocket"):
            tls = dict(info)
            if cert is not None and check is not None:
                try:
                    tls["client_cert_error"] = check(cert)
                except Exception:  # a broken trust store refuses, it never lets in
                    log.exception("checking a client certificate failed")
                    tls["client_cert_error"] = "unverifiable"
            mutable = cast(MutableMapping[str, Any], scope)
            extensions = dict(mutable.get("extensions") or {})
            extensions["tls"] = tls
            mutable["extensions"] = extensions
        await app(scope, receive, send)

    return tls_app


@dataclass(frozen=True, slots=True)
class _Verifier:
    """What a protocol class checks client certificates with."""

    check: CertificateCheck | None
    server_pem: str | None


class MutualTlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, giving the app the ASGI "tls" extension of its connection.

    Pass a subclass made by `checking` as `uvicorn.Config(http=...)`.
    """

    verifier: ClassVar[_Verifier] = _Verifier(None, None)

    @classmethod
    def checking(
        cls, check: CertificateCheck | None, *, server_pem: str | None = None
    ) -> type[MutualTlsH11Protocol]:
        """A protocol class that asks `check` about the client certificate at every request."""
        return type(
            "CheckedMutualTlsH11Protocol", (cls,), {"verifier": _Verifier(check, server_pem)}
        )

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            verifier = self.verifier
            info = _tls_info(ssl_object, verifier.server_pem)
            self.app = _with_tls(self.app, info, verifier.check)


# --- the server ----------------------------------------------------------------------------


class ApiServer:
    """An ASGI app served over mutual TLS on one socket; `start`, then `stop`."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        check: CertificateCheck | None,
        server_pem: str | None = None,
        access_log: bool = False,
        timeout_graceful_shutdown: int = 5,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.check = check
        self.server_pem = server_pem
        self.access_log = access_log
        self.timeout_graceful_shutdown = timeout_graceful_shutdown
        self._server: uvicorn.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def _config(self) -> uvicorn.Config:
        context = self.ssl_context
        return uvicorn.Config(
            self.app,
            host=self.host,
            port=self.requested_port,
            http=MutualTlsH11Protocol.checking(self.check, server_pem=self.server_pem),
            ssl_context_factory=lambda _config, _default: context,
            lifespan="off",
            log_config=None,  # the process's logging stays as its owner set it up
            access_log=self.access_log,
            proxy_headers=False,  # clients connect directly; no forwarded addresses
            server_header=False,
            timeout_graceful_shutdown=self.timeout_graceful_shutdown,
        )

    @property
    def started(self) -> bool:
        """True between a successful `start` and `stop`."""
        return self._server is not None and self._server.started

    @property
    def port(self) -> int:
        """The port the server listens on (the one the system chose for port 0)."""
        if self._server is None or not self._server.started:
            raise RuntimeError("the API server is not started")
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The server's base URL (https://host:port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    async def start(self) -> None:
        """Listen and serve; OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the API server is already started")
        config = self._config()
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup()
        except SystemExit:  # uvicorn's way of saying it could not bind
            where = f"{self.host}:{self.requested_port}"
            raise OSError(f"the API server cannot listen on {where}") from None
        self._server = server
        self._loop_task = asyncio.create_task(server.main_loop(), name="api-server")
        log.info("API listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (within the grace period), close."""
        server, task = self._server, self._loop_task
        if server is None:
            return
        server.should_exit = True
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.shutdown()
        self._server = self._loop_task = None

    async def wait(self) -> None:
        """Until the server stops (by `stop`, or a failure of its loop)."""
        if self._loop_task is not None:
            await asyncio.shield(self._loop_task)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    app: Any,
    *,
    host: str,
    port: int,
    pki_dir: Path | str,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    access_log: bool = False,
) -> ApiServer:
    """Serve `app` over mutual TLS with the scheme PKI in `pki_dir`; the server, started.

    Clients need a certificate of the scheme CA that the scheme still honours; the app
    finds it with `client_certificate(scope)`.
    """
    context = scheme_ssl_context(pki_dir, hostnames=hostnames)
    server_pem = (Path(pki_dir) / "server" / "server.crt").read_text("ascii")
    server = ApiServer(
        app,
        host=host,
        port=port,
        ssl_context=context,
        check=TrustGate(pki_dir),
        server_pem=server_pem,
        access_log=access_log,
    )
    await server.start()
    return server
