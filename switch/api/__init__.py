"""The switch's HTTPS APIs, served over mutual TLS with the scheme PKI.

`participant_app` is the participants' alias-directory API (RULEBOOK §5); `serve` (or
`ApiServer` with `scheme_ssl_context` and `TrustGate`) runs an app so that only holders
of a scheme certificate the scheme still honours get in; `start_participant_api` does
both on a store, as `rtpswitch run` needs it.
"""

from switch.api.participants import (
    PROBLEM_MEDIA_TYPE,
    STATUS_OF_CODE,
    ApiProblem,
    Problem,
    participant_app,
    start_participant_api,
)
from switch.api.tls import (
    DEFAULT_HOSTNAMES,
    ApiServer,
    ClientCertificate,
    MutualTlsH11Protocol,
    TrustGate,
    client_certificate,
    scheme_ssl_context,
    serve,
    server_ssl_context,
)

__all__ = [
    "DEFAULT_HOSTNAMES",
    "PROBLEM_MEDIA_TYPE",
    "STATUS_OF_CODE",
    "ApiProblem",
    "ApiServer",
    "ClientCertificate",
    "MutualTlsH11Protocol",
    "Problem",
    "TrustGate",
    "client_certificate",
    "participant_app",
    "scheme_ssl_context",
    "serve",
    "server_ssl_context",
    "start_participant_api",
]
