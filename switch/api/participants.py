"""The participants' alias-directory API (RULEBOOK §5), JSON over HTTPS with mutual TLS.

Theory of operation. A bank manages its own aliases, looks up other banks' aliases and
moves aliases between banks (portability) through this API; the alias directory itself
decides (`switch.directory`), and `DirectoryService` stores each decision so the engine
sees it at its next payment. The app only translates: HTTP in, a service call, JSON out.

Who is calling is the participant id in the CN of the client certificate the TLS layer
verified (the ASGI "tls" extension, see `switch.api.tls`), never a header or a
parameter. A request whose certificate the scheme no longer honours (revoked, retired
after a rotation, expired) or whose CN is not a participant of the scheme is refused 403
before its path or body is even looked at. Every endpoint acts as that participant: a
bank lists, reads and changes only its own aliases, and sees another bank's alias only
through a lookup, which returns the owning participant and the masked name, never the
account. A lookup is rationed by the token buckets (RULEBOOK §5: a found alias costs 1,
a miss 20); an empty bucket answers 429 with `Retry-After`.

Reads refresh the service's view of the directory first, so they see every change any
process has committed (writes decide on the latest directory anyway, in the store's
write lock).

Every error is an RFC 9457 problem (`application/problem+json`): `type`
(`urn:rtpswitch:problem:<code>`), `title`, `status`, `detail`, and the switch's own
`code` and `field` (the request field at fault, when there is one); a malformed body,
path or query names every field at fault in `errors`. A directory refusal keeps the
directory's code: invalid input 422, another bank's alias 403, unknown alias or claim
404, a conflict with the directory's state 409.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote
from uuid import uuid4

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from switch.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ApiProblem,
    BodyLimit,
    Problem,
    install_handlers,
    problem_response,
    problem_responses,
    problems_as_problem_json,
    store_errors,
    unavailable,
)
from switch.api.tls import DEFAULT_HOSTNAMES, ApiServer, client_certificate, serve
from switch.core.errors import InternalError
from switch.directory import (
    DIRECTORY_ERROR_CODES,
    Alias,
    AliasStatus,
    AliasType,
    Claim,
    ClaimState,
    DirectoryError,
    LookupLimiter,
    NotFound,
    mask_name,
    normalize,
)
from switch.directory_service import DirectoryService
from switch.metrics import ALIAS_LOOKUPS
from switch.store.base import Store

__all__ = [
    "API_VERSION",
    "MAX_BODY_BYTES",
    "PROBLEM_MEDIA_TYPE",
    "STATUS_OF_CODE",
    "AliasList",
    "AliasOut",
    "AliasRegistration",
    "AliasUpdate",
    "ApiProblem",
    "ClaimList",
    "ClaimOpening",
    "ClaimOut",
    "LookupResult",
    "Problem",
    "new_claim_id",
    "participant_app",
    "start_participant_api",
]

log = logging.getLogger("rtpswitch.api")

API_VERSION: Final = "1"
MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body accepted (the largest request is a few hundred bytes)."""

STATUS_OF_CODE: Final[Mapping[str, int]] = {
    "invalid_alias": 422,
    "invalid_account": 422,
    "invalid_name": 422,
    "invalid_participant": 422,
    "invalid_file": 422,
    "no_change": 422,
    "evp_not_portable": 422,
    "not_owner": 403,
    "not_found": 404,
    "duplicate": 409,
    "claim_exists": 409,
    "claim_not_open": 409,
    "claim_not_due": 409,
    "same_owner": 409,
}
"""The HTTP status of each DirectoryError code."""
assert set(STATUS_OF_CODE) == set(DIRECTORY_ERROR_CODES)

_CERTIFICATE_PROBLEMS: Final[Mapping[str, tuple[str, str]]] = {
    "revoked": ("certificate_revoked", "the client certificate is revoked"),
    "expired": ("certificate_expired", "the client certificate has expired or been retired"),
    "not-yet-valid": ("certificate_not_yet_valid", "the client certificate is not valid yet"),
    "unknown": ("certificate_unknown", "the client certificate is not of the scheme CA"),
}
"""`client_cert_error` values of the TLS layer -> the problem code and title they give."""

_PARTICIPANT_RELOAD: Final = 10.0
"""Seconds between reloads of the participant list to look for an id not known yet."""


# --- problems ------------------------------------------------------------------------------


def _directory_problem(exc: DirectoryError) -> ApiProblem:
    return ApiProblem(
        STATUS_OF_CODE.get(exc.code, 422),
        exc.code,
        exc.message,
        title=DIRECTORY_ERROR_CODES.get(exc.code),
        field=exc.field,
    )


def _directory_problem_of(exc: Exception) -> ApiProblem:
    assert isinstance(exc, DirectoryError)
    return _directory_problem(exc)


def _problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the error answers an endpoint can give."""
    texts = {
        403: "the client certificate is refused, the caller is not a participant, "
        "or the alias belongs to another participant (`not_owner`)",
        404: "no such alias or claim of the caller (`not_found`)",
        409: "the request conflicts with the directory (`duplicate`, `claim_exists`, "
        "`claim_not_open`, `same_owner`)",
        413: "the body is too large",
        422: "a malformed body, path or query (`invalid_request`), or a value the "
        "directory refuses (`invalid_alias`, `invalid_account`, `invalid_name`, "
        "`no_change`, `evp_not_portable`)",
        429: "a token bucket is empty (`rate_limited`); see `Retry-After`",
        503: "the directory's store is unavailable (`unavailable`)",
    }
    return problem_responses(texts, {403, 422, 503, *statuses})


# --- bodies --------------------------------------------------------------------------------


class AliasRegistration(BaseModel):
    """An alias to register for the caller."""

    model_config = ConfigDict(extra="forbid")

    type: AliasType = Field(description="VPA, EMAL, TELE or EVP")
    value: str | None = Field(
        default=None,
        description="the alias (handle@psp, an e-mail address, +E.164); absent for an EVP, "
        "which the directory generates",
        examples=["alice@banka"],
    )
    account: str = Field(description="the caller's account the alias pays into")
    name: str = Field(description="the account holder's display name (masked in lookups)")


class AliasUpdate(BaseModel):
    """A new account or display name (or both) for one of the caller's aliases."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = None
    name: str | None = None


class ClaimOpening(BaseModel):
    """A portability claim: move another participant's alias to the caller's account."""

    model_config = ConfigDict(extra="forbid")

    type: AliasType = Field(description="VPA, EMAL or TELE (an EVP is not portable)")
    value: str
    account: str = Field(description="the caller's account the alias will pay into")
    name: str = Field(description="the display name the alias will carry")


class AliasOut(BaseModel):
    """One of the caller's aliases."""

    type: AliasType
    value: str = Field(description="the canonical alias (for an EVP, the generated key)")
    account: str
    name: str
    status: AliasStatus
    version: int = Field(description="the directory change that last wrote the alias")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, alias: Alias) -> AliasOut:
        return cls(
            type=alias.kind,
            value=alias.value,
            account=alias.account,
            name=alias.name,
            status=alias.status,
            version=alias.version,
            created_at=alias.created_at,
            updated_at=alias.updated_at,
        )


class AliasList(BaseModel):
    """The caller's aliases, active and inactive."""

    aliases: list[AliasOut]


class LookupResult(BaseModel):
    """Who an alias pays: the owning participant and the masked name, never the account."""

    type: AliasType
    value: str = Field(description="the canonical alias")
    participant: str = Field(description="the owning participant's id (BICFI)")
    name: str = Field(description="the holder's name, masked (A**** S****)")


class ClaimOut(BaseModel):
    """A portability claim the caller is a party to."""

    id: str
    type: AliasType
    value: str
    role: Literal["claimant", "owner"] = Field(description="the caller's part in the claim")
    claimant: str
    owner: str
    account: str | None = Field(description="the claimant's account (shown to the claimant only)")
    name: str = Field(description="the name the alias will carry (masked for the owner)")
    state: ClaimState
    opened_at: datetime
    expires_at: datetime = Field(description="unanswered until then, the claim completes")
    closed_at: datetime | None

    @classmethod
    def of(cls, claim: Claim, caller: str) -> ClaimOut:
        claimant = claim.claimant == caller
        return cls(
            id=claim.id,
            type=claim.kind,
            value=claim.value,
            role="claimant" if claimant else "owner",
            claimant=claim.claimant,
            owner=claim.owner,
            account=claim.account if claimant else None,
            name=claim.name if claimant else mask_name(claim.name),
            state=claim.state,
            opened_at=claim.opened_at,
            expires_at=claim.expires_at,
            closed_at=claim.closed_at,
        )


class ClaimList(BaseModel):
    """Claims the caller is claimant or owner of, oldest first."""

    claims: list[ClaimOut]


# --- who is calling ------------------------------------------------------------------------

ParticipantSource = Collection[str] | Callable[[], Awaitable[Collection[str]]]
"""The scheme's participant ids: a live collection, or a coroutine that loads them."""


class _Participants:
    """Whether an id is a participant; a loader is asked again (rarely) for unknown ids."""

    def __init__(self, source: ParticipantSource, monotonic: Callable[[], float]) -> None:
        self._fixed = source if not callable(source) else None
        self._load = source if callable(source) else None
        self._known: Collection[str] = ()
        self._loaded_at: float | None = None
        self._monotonic = monotonic
        self._lock = asyncio.Lock()

    async def has(self, participant: str) -> bool:
        if self._fixed is not None:
            return participant in self._fixed
        if participant in self._known:
            return True
        assert self._load is not None
        async with self._lock:
            now = self._monotonic()
            if self._loaded_at is None or now - self._loaded_at >= _PARTICIPANT_RELOAD:
                self._known = frozenset(await self._load())
                self._loaded_at = now
        return participant in self._known


def _store_participants(service: DirectoryService) -> Callable[[], Awaitable[Collection[str]]]:
    async def load() -> Collection[str]:
        state = await service.store.load_state()
        return frozenset(state.participants)

    return load


async def _identify(scope: Scope, known: _Participants) -> str:
    """The calling participant: the CN of a client certificate the scheme honours (or 403)."""
    cert = client_certificate(scope)
    if cert is None:
        raise ApiProblem(
            403,
            "certificate_required",
            "the API needs a client certificate of the scheme CA",
            title="no client certificate",
        )
    if cert.error is not None:
        code, title = _CERTIFICATE_PROBLEMS.get(
            cert.error, ("certificate_refused", "the client certificate is refused")
        )
        detail = f"{title} (serial {cert.certificate.serial_number})"
        raise ApiProblem(403, code, detail, title=title)
    participant = cert.common_name
    if participant is None or not await known.has(participant):
        raise ApiProblem(
            403,
            "unknown_participant",
            f"the client certificate names {participant!r}, not a participant of the scheme",
            title="not a participant",
        )
    return participant


class _ParticipantGate:
    """Let a request in only from a participant (before its path or body is looked at);
    the participant goes into the request's state."""

    def __init__(self, app: ASGIApp, known: _Participants) -> None:
        self.app = app
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            participant = await _identify(scope, self.known)
        except ApiProblem as problem:
            await problem_response(problem)(scope, receive, send)
            return
        except store_errors() as exc:
            await problem_response(unavailable(exc, "the directory"))(scope, receive, send)
            return
        scope.setdefault("state", {})["participant"] = participant
        await self.app(scope, receive, send)


async def _caller(request: Request) -> str:
    """The participant `_ParticipantGate` let in."""
    participant = getattr(request.state, "participant", None)
    if not isinstance(participant, str):
        raise InternalError("a request reached an endpoint without the participant gate")
    return participant


Caller = Annotated[str, Depends(_caller)]
TypePath = Annotated[AliasType, Path(description="VPA, EMAL, TELE or EVP")]
ValuePath = Annotated[str, Path(description="the alias, URL-encoded", max_length=320)]
ClaimPath = Annotated[str, Path(description="the claim's id", min_length=1, max_length=64)]


# --- the app -------------------------------------------------------------------------------


def participant_app(
    service: DirectoryService,
    limiter: LookupLimiter,
    *,
    participants: ParticipantSource | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The participants' alias-directory API on `service`, lookups rationed by `limiter`.

    `participants`: the scheme's participant ids (a live collection such as the
    engine's participant directory, or a coroutine function loading them); by default
    they are read from the service's store, again when an unknown id calls (at most
    every ten seconds). `monotonic` is the clock of the token buckets.
    """
    known = _Participants(
        participants if participants is not None else _store_participants(service), monotonic
    )

    app = FastAPI(
        title="rtpswitch participant API",
        version=API_VERSION,
        description=(
            "The alias directory (RULEBOOK §5) for participant banks, over HTTPS with "
            "mutual TLS: the client certificate's CN is the calling participant. Errors "
            "are RFC 9457 problems (application/problem+json) with `code` and `field`."
        ),
        openapi_url=f"/v{API_VERSION}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(_ParticipantGate, known=known)  # outermost: who first
    router = APIRouter(prefix=f"/v{API_VERSION}")

    # --- own aliases ---------------------------------------------------------------------

    @router.get(
        "/aliases",
        tags=["aliases"],
        summary="List the caller's aliases",
        response_model=AliasList,
        responses=_problem_responses(),
    )
    async def list_aliases(participant: Caller) -> AliasList:
        await service.refresh()
        owned = service.directory.owned_by(participant)
        return AliasList(aliases=[AliasOut.of(a) for a in owned])

    @router.post(
        "/aliases",
        tags=["aliases"],
        summary="Register an alias",
        status_code=201,
        response_model=AliasOut,
        responses=_problem_responses(409, 413),
    )
    async def register(participant: Caller, body: AliasRegistration) -> JSONResponse:
        alias = await service.register(
            participant=participant,
            kind=body.type,
            value=body.value,
            account=body.account,
            name=body.name,
        )
        out = AliasOut.of(alias)
        location = f"/v{API_VERSION}/aliases/{alias.kind}/{quote(alias.value, safe='@+')}"
        return JSONResponse(
            out.model_dump(mode="json"), status_code=201, headers={"Location": location}
        )

    async def own_alias(participant: str, kind: AliasType, value: str) -> Alias:
        canonical = normalize(kind, value)
        await service.refresh()
        alias = service.directory.get(kind, canonical)
        if alias is None or alias.status is AliasStatus.DELETED or alias.participant != participant:
            raise NotFound(f"{kind} {canonical} is not an alias of {participant}")
        return alias

    @router.get(
        "/aliases/{type}/{value}",
        name="get_alias",
        tags=["aliases"],
        summary="Read one of the caller's aliases",
        response_model=AliasOut,
        responses=_problem_responses(404),
    )
    async def get_alias(participant: Caller, type: TypePath, value: ValuePath) -> AliasOut:
        return AliasOut.of(await own_alias(participant, type, value))

    @router.patch(
        "/aliases/{type}/{value}",
        tags=["aliases"],
        summary="Point an alias at another account or give it another name",
        response_model=AliasOut,
        responses=_problem_responses(404, 413),
    )
    async def update_alias(
        participant: Caller, type: TypePath, value: ValuePath, body: AliasUpdate
    ) -> AliasOut:
        alias = await service.update(
            participant=participant, kind=type, value=value, account=body.account, name=body.name
        )
        return AliasOut.of(alias)

    for action, active in (("activate", True), ("deactivate", False)):

        def make(active: bool) -> Callable[..., Awaitable[AliasOut]]:
            async def set_active(participant: Caller, type: TypePath, value: ValuePath) -> AliasOut:
                alias = await service.set_active(
                    participant=participant, kind=type, value=value, active=active
                )
                return AliasOut.of(alias)

            return set_active

        router.add_api_route(
            f"/aliases/{{type}}/{{value}}/{action}",
            make(active),
            methods=["POST"],
            name=f"{action}_alias",
            tags=["aliases"],
            summary=(
                "Activate an alias (payments to it clear again)"
                if active
                else "Deactivate an alias (payments to it are rejected BE23)"
            ),
            response_model=AliasOut,
            responses=_problem_responses(404),
        )

    @router.delete(
        "/aliases/{type}/{value}",
        tags=["aliases"],
        summary="Delete an alias (anyone may register it again)",
        response_model=AliasOut,
        responses=_problem_responses(404, 409),
    )
    async def delete_alias(participant: Caller, type: TypePath, value: ValuePath) -> AliasOut:
        alias = await service.delete(participant=participant, kind=type, value=value)
        return AliasOut.of(alias)

    # --- lookup --------------------------------------------------------------------------

    @router.get(
        "/lookup/{type}/{value}",
        tags=["lookup"],
        summary="Who an alias pays: the owning participant and the masked name",
        response_model=LookupResult,
        responses=_problem_responses(404, 429),
    )
    async def lookup(
        participant: Caller,
        type: TypePath,
        value: ValuePath,
        end_user: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=140,
                description="the caller's end user asking (rationed separately)",
            ),
        ] = None,
    ) -> LookupResult:
        canonical = normalize(type, value)
        await service.refresh()
        now = monotonic()
        if not limiter.admit(participant, end_user, now):
            ALIAS_LOOKUPS.labels("api", "refused").inc()
            seconds, field = _retry_after(limiter, participant, end_user, now)
            whose = "the end user's" if field == "end_user" else f"{participant}'s"
            raise ApiProblem(
                429,
                "rate_limited",
                f"{whose} lookups are exhausted for now (a miss costs more than a hit)",
                title="too many lookups",
                field=field,
                headers={"Retry-After": str(seconds)},
            )
        alias = service.directory.resolve(type, canonical)
        limiter.charge(participant, end_user, alias is not None, now)
        ALIAS_LOOKUPS.labels("api", "not_found" if alias is None else "found").inc()
        if alias is None:
            raise NotFound(f"{type} {canonical} is not registered")
        return LookupResult(
            type=alias.kind,
            value=alias.value,
            participant=alias.participant,
            name=alias.masked_name,
        )

    # --- portability ---------------------------------------------------------------------

    @router.post(
        "/claims",
        tags=["claims"],
        summary="Claim another participant's alias (portability)",
        status_code=201,
        response_model=ClaimOut,
        responses=_problem_responses(404, 409, 413),
    )
    async def open_claim(participant: Caller, body: ClaimOpening) -> JSONResponse:
        claim = await service.claim(
            claimant=participant,
            kind=body.type,
            value=body.value,
            account=body.account,
            name=body.name,
        )
        out = ClaimOut.of(claim, participant)
        return JSONResponse(
            out.model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"/v{API_VERSION}/claims/{quote(claim.id, safe='')}"},
        )

    @router.get(
        "/claims",
        tags=["claims"],
        summary="List the claims the caller is claimant or owner of",
        response_model=ClaimList,
        responses=_problem_responses(),
    )
    async def list_claims(
        participant: Caller,
        role: Annotated[
            Literal["claimant", "owner"] | None, Query(description="only this part")
        ] = None,
        state: Annotated[ClaimState | None, Query(description="only claims in this state")] = None,
    ) -> ClaimList:
        await service.refresh()
        claims = [ClaimOut.of(c, participant) for c in service.directory.claims_for(participant)]
        return ClaimList(
            claims=[
                c
                for c in claims
                if (role is None or c.role == role) and (state is None or c.state is state)
            ]
        )

    @router.get(
        "/claims/{claim_id}",
        tags=["claims"],
        summary="Read a claim the caller is a party to",
        response_model=ClaimOut,
        responses=_problem_responses(404),
    )
    async def get_claim(participant: Caller, claim_id: ClaimPath) -> ClaimOut:
        await service.refresh()
        claim = service.directory.get_claim(claim_id)
        if claim is None or participant not in (claim.claimant, claim.owner):
            raise NotFound(f"there is no claim {claim_id!r} of {participant}", field="claim")
        return ClaimOut.of(claim, participant)

    claim_actions: tuple[tuple[str, str], ...] = (
        ("confirm", "The owner agrees: the alias moves to the claimant now"),
        ("reject", "The owner refuses: the alias stays"),
        ("cancel", "The claimant withdraws its claim"),
    )
    for action, summary in claim_actions:

        def make_answer(action: str) -> Callable[..., Awaitable[ClaimOut]]:
            async def answer(participant: Caller, claim_id: ClaimPath) -> ClaimOut:
                if action == "cancel":
                    claim = await service.cancel_claim(claimant=participant, claim_id=claim_id)
                else:
                    claim = await service.answer_claim(
                        owner=participant, claim_id=claim_id, confirm=action == "confirm"
                    )
                return ClaimOut.of(claim, participant)

            return answer

        router.add_api_route(
            f"/claims/{{claim_id}}/{action}",
            make_answer(action),
            methods=["POST"],
            name=f"{action}_claim",
            tags=["claims"],
            summary=summary,
            response_model=ClaimOut,
            responses=_problem_responses(404, 409),
        )

    app.include_router(router)
    install_handlers(app, extra={DirectoryError: _directory_problem_of}, store="the directory")
    problems_as_problem_json(app)
    return app


def _retry_after(
    limiter: LookupLimiter, participant: str, end_user: str | None, now: float
) -> tuple[int, str | None]:
    """Seconds until a refused requester may look up again, and the field whose bucket is dry.

    Exact for the participant's bucket; for an end user's, the longest a debt left by
    one charge can take to repay (its key is the limiter's own affair).
    """
    buckets = limiter.participants
    tokens = buckets.tokens(participant, now)
    if tokens < 1 or end_user is None:
        wait = max(1.0 - tokens, 0.0) / buckets.settings.refill_per_second
        return max(1, math.ceil(wait)), None
    settings = limiter.end_users.settings
    debt = max(settings.found_cost, settings.miss_cost)
    return max(1, math.ceil(debt / settings.refill_per_second)), "end_user"


def new_claim_id() -> str:
    """A claim id unique across processes without coordination (96 random bits)."""
    return f"CLM{uuid4().hex[:24]}"


async def start_participant_api(
    store: Store,
    *,
    pki_dir: FilePath | str,
    host: str,
    port: int,
    limiter: LookupLimiter,
    claim_period: timedelta,
    participants: ParticipantSource | None = None,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    clock: Callable[[], datetime] | None = None,
    access_log: bool = False,
) -> tuple[ApiServer, DirectoryService]:
    """Serve the participant API on `store` over mutual TLS; the started server and its view.

    The API gets a `DirectoryService` of its own: the engine's view must only move by
    its own `refresh`, whose result tells it which claim steps to notify. Share the
    engine's `LookupLimiter` as `limiter`, so that acmt.023 and API lookups draw on the
    same buckets.
    """
    service = DirectoryService(
        store,
        clock=clock or (lambda: datetime.now(UTC)),
        claim_period=claim_period,
        claim_ids=new_claim_id,
    )
    await service.start()
    server = await serve(
        participant_app(service, limiter, participants=participants),
        host=host,
        port=port,
        pki_dir=pki_dir,
        hostnames=hostnames,
        access_log=access_log,
    )
    return server, service
