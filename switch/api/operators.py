"""The operator API: monitoring and operating the switch, JSON over HTTPS.

Theory of operation. The scheme operator runs the switch 24x7 through this API and the
dashboard it serves (`/dashboard`). It is served by `rtpswitch run`'s leader (and by
`rtpswitch demo --serve`) over HTTPS with a server certificate of the scheme CA; callers
are operators, not banks, so no client certificate is asked for: every `/v1` request
carries an operator token (`Authorization: Bearer rtpo_...`), whose role decides what it
may do (`switch.operations.access`): viewer reads, operator also suspends, resumes,
funds, defunds and approves, admin also onboards, sets limits and manages tokens. A
missing, malformed, unknown or revoked token answers 401; a role without the right 403.

The app only translates: HTTP in, an `OperatorService` call, JSON out. Every change is
made by the engine (positions, participants) or the store (tokens, approvals) together
with its audit record (who, what, when, before/after), which `GET /v1/audit` reads back.

Unauthenticated: `/healthz` (the process answers), `/readyz` (database, broker, schemas
and engine ready: 200, else 503 naming what is not), `/dashboard` (the page; it holds no
data) and the OpenAPI document. `/metrics` is the Prometheus exposition and, since it
shows positions, needs a viewer token like the rest (Prometheus sends it with
`authorization: {credentials: ...}`).

Every error is an RFC 9457 problem (`switch.api.problems`); amounts are decimal strings
of the scheme currency; times are ISO 8601 UTC. Lists page newest first with an opaque
`next` cursor.
"""

import base64
import binascii
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path as FilePath
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from switch.api.dashboard import dashboard_router
from switch.api.problems import (
    ApiProblem,
    BodyLimit,
    install_handlers,
    problem_responses,
    problems_as_problem_json,
)
from switch.api.tls import DEFAULT_HOSTNAMES, ApiServer, scheme_ssl_context
from switch.core import (
    Money,
    Participant,
    ParticipantStatus,
    PaymentEvent,
    PaymentState,
    to_minor,
)
from switch.ledger import EntryKind
from switch.metrics import render_metrics
from switch.operations import Action, OperatorCommand, Refused, Role, Severity
from switch.operator_service import Operator, OperatorService, alert_view
from switch.store.base import (
    Approval,
    ApprovalState,
    ArchivedMessage,
    Direction,
    PaymentQuery,
    PaymentRecord,
)

__all__ = ["operator_app", "start_operator_api"]

log = logging.getLogger("rtpswitch.api")

API_VERSION: Final = "1"
MAX_BODY_BYTES: Final = 16 * 1024
AMOUNT_PATTERN: Final = r"^[0-9]{1,15}(\.[0-9]{1,6})?$"
BICFI_PATTERN: Final = r"^[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$"
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"
TOKEN_ID_PATTERN: Final = r"^[0-9a-f]{12}$"


def _refused(exc: Exception) -> ApiProblem:
    assert isinstance(exc, Refused)
    headers = {"WWW-Authenticate": 'Bearer realm="rtpswitch"'} if exc.status == 401 else None
    return ApiProblem(exc.status, exc.code, exc.detail, field=exc.field, headers=headers)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        401: "no operator token, or one that is malformed, unknown or revoked",
        403: "the token's role does not have this right",
        404: "no such participant, payment, approval or token",
        409: "the request conflicts with the current state (e.g. defund more than available)",
        413: "the body is too large",
        422: "a malformed body, path or query (`invalid_request`) or a refused value",
        503: "the database cannot be reached now (`unavailable`)",
    }
    answers = problem_responses(texts, {401, 403, 422, 503, *statuses})
    answers[401]["headers"] = {
        "WWW-Authenticate": {
            "description": '`Bearer realm="rtpswitch"`',
            "schema": {"type": "string"},
        }
    }
    return answers


# --- bodies --------------------------------------------------------------------------------

Amount = Annotated[
    str,
    Field(
        pattern=AMOUNT_PATTERN,
        description="a positive decimal amount of the scheme currency, e.g. `2500.00`",
        examples=["2500.00"],
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoneyMove(_Body):
    """Fund or defund a participant's position."""

    amount: Amount
    reference: str = Field(default="", max_length=140, description="the operator's reference")


class Onboarding(_Body):
    """A participant to register."""

    id: str = Field(pattern=BICFI_PATTERN, description="the participant's BICFI")
    member_id: str = Field(pattern=r"^[0-9]{9}$", description="its 9-digit clearing member id")
    name: str = Field(min_length=1, max_length=140)
    limit: Amount | None = Field(default=None, description="per-payment limit (none: scheme's)")


class LimitChange(_Body):
    """A participant's per-payment limit (null removes it)."""

    limit: Amount | None


class TokenRequest(_Body):
    """An operator token to issue."""

    name: str = Field(pattern=NAME_PATTERN, description="the operator's name, as audited")
    role: Role


class HealthOut(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class ReadinessOut(BaseModel):
    """Whether the switch can clear now, and each dependency's state."""

    ready: bool
    checks: dict[str, str] = Field(
        description="database, broker, schemas and engine: `ok`, or what is wrong with it"
    )


class ParticipantOut(BaseModel):
    """A participant with its position (amounts of the scheme currency)."""

    id: str = Field(description="the participant's BICFI")
    member_id: str
    name: str
    status: ParticipantStatus
    limit: str | None = Field(description="its per-payment limit (null: the scheme's)")
    available: str
    reserved: str
    connected: bool | None = Field(
        default=None, description="whether the bank is connected (null: cannot tell)"
    )


class ParticipantList(BaseModel):
    currency: str
    participants: list[ParticipantOut]


class JournalEntryOut(BaseModel):
    kind: EntryKind
    debit: str
    credit: str
    amount: str
    ref: str


class JournalOut(BaseModel):
    seq: int
    at: datetime
    entry: JournalEntryOut


class ApprovalOut(BaseModel):
    """A fund or defund above the approval threshold, for a second operator to decide."""

    id: str
    action: Literal["fund", "defund"]
    participant: str
    amount: str
    reference: str
    maker: str = Field(description="the operator who asked for it")
    created_at: datetime
    expires_at: datetime
    state: ApprovalState
    checker: str | None = Field(description="the operator who decided it")
    decided_at: datetime | None


class MoveResult(BaseModel):
    """A fund or defund: done (the participant after it and the journal entries), or waiting
    for a second operator (the approval)."""

    status: Literal["done", "pending_approval"]
    participant: ParticipantOut | None = None
    journal: list[JournalEntryOut] = []
    approval: ApprovalOut | None = None


class PositionOut(BaseModel):
    available: str
    reserved: str


class PositionsOut(BaseModel):
    currency: str
    positions: dict[str, PositionOut] = Field(description="by participant BICFI")
    total_available: str
    total_reserved: str


class JournalPage(BaseModel):
    entries: list[JournalOut]
    next: str | None


class PaymentOut(BaseModel):
    id: str
    uetr: str
    msg_id: str
    end_to_end_id: str
    tx_id: str | None
    debtor_agent: str
    creditor_agent: str | None
    amount: str
    state: PaymentState
    reason: str | None = Field(description="the ISO 20022 reason code of a reject")
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None


class PaymentPage(BaseModel):
    payments: list[PaymentOut]
    next: str | None


class MessageOut(BaseModel):
    id: str
    direction: Direction
    participant: str
    msg_type: str
    biz_msg_id: str | None
    sha256: str
    at: datetime
    sent_at: datetime | None
    in_reply_to: str | None
    xml: str | None = None


class TransitionOut(BaseModel):
    state: PaymentState
    event: PaymentEvent | None
    at: datetime
    reason: str | None


class PaymentDetail(BaseModel):
    payment: PaymentOut
    transitions: list[TransitionOut]
    messages: list[MessageOut]


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="the bearer token: shown this once, never again")


class AuditOut(BaseModel):
    seq: int | None
    at: datetime
    actor: str = Field(description="the operator's name (`command-line`: on the host)")
    role: str = Field(description="the operator's role: viewer, operator or admin")
    action: str = Field(description="e.g. `participant.suspend`, `token.create`")
    target: str = Field(description="the participant, token or approval acted on")
    before: dict[str, Any] | None = Field(description="what the target was (null: it was not)")
    after: dict[str, Any] | None = Field(description="what it became")
    approval: str | None = Field(description="the approval the change was made under")


class AuditPage(BaseModel):
    records: list[AuditOut]
    next: str | None


class AlertOut(BaseModel):
    code: str
    severity: Severity
    participant: str | None
    message: str
    since: datetime


class ConservationSide(BaseModel):
    """Conservation measured on one side (the engine's memory or the database)."""

    ok: bool
    available: str
    reserved: str
    funded: str
    defunded: str
    discrepancy: str = Field(description="available + reserved - (funded - defunded): zero")


class ConservationOut(BaseModel):
    """Money is neither made nor lost: positions add up to what was funded less defunded."""

    ok: bool
    currency: str
    memory: ConservationSide
    database: ConservationSide


class SwitchOut(BaseModel):
    engine_running: bool
    store: Literal["postgresql", "sqlite"]
    uptime_seconds: float


class RatesOut(BaseModel):
    """Per-second rates over one sampling interval, ending `at`."""

    at: datetime
    payments_per_second: float
    settled_per_second: float
    rejected_per_second: float
    timed_out_per_second: float
    reject_rate: float = Field(description="rejected and timed out, of the final payments")


class TotalsOut(BaseModel):
    payments: int
    settled: int
    rejected: int
    timed_out: int
    in_flight: int


class LatencyOut(BaseModel):
    """Percentiles of the recent end-to-end latencies in ms (null: no payment yet)."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    count: int


class DashboardParticipantOut(BaseModel):
    id: str
    name: str
    status: ParticipantStatus
    connected: bool | None
    available: str
    reserved: str
    low_position: bool = Field(description="available is under the low-position threshold")
    low_position_threshold: str


class RejectOut(BaseModel):
    """A payment rejected or timed out."""

    payment_id: str
    uetr: str
    at: datetime
    debtor_agent: str
    creditor_agent: str | None
    amount: str
    state: PaymentState
    reason: str | None
    reason_text: str = Field(description="the reason code's name")


class DashboardOut(BaseModel):
    """Everything the dashboard shows, in one answer."""

    at: datetime
    currency: str
    switch: SwitchOut
    series: list[RatesOut] = Field(description="the last ten minutes, oldest first")
    totals: TotalsOut
    latency_ms: LatencyOut
    participants: list[DashboardParticipantOut]
    recent_rejects: list[RejectOut] = Field(description="newest first")
    alerts: list[AlertOut]


# --- cursors -------------------------------------------------------------------------------


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_cursor(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise ApiProblem(
            422, "invalid_cursor", "the cursor is not one this API gave", field="cursor"
        ) from None


def _seq_cursor(text: str | None) -> int | None:
    value = _decode_cursor(text)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiProblem(
            422, "invalid_cursor", "the cursor is not one this API gave", field="cursor"
        )
    return value


def _payment_cursor(text: str | None) -> tuple[datetime, str] | None:
    value = _decode_cursor(text)
    if value is None:
        return None
    try:
        at, pid = value
        moment = datetime.fromisoformat(at)
        if not isinstance(pid, str) or moment.tzinfo is None:
            raise ValueError
    except (TypeError, ValueError):
        raise ApiProblem(
            422, "invalid_cursor", "the cursor is not one this API gave", field="cursor"
        ) from None
    return moment, pid


# --- the app -------------------------------------------------------------------------------


async def _known_query_parameters(request: Request) -> None:
    """422 for a query parameter the endpoint does not take (a misspelt filter would
    otherwise be ignored, and a search answer more than was asked)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {param.alias for param in _query_params(dependant)}
    for name in request.query_params:
        if name not in known:
            raise ApiProblem(
                422,
                "unknown_parameter",
                f"{request.url.path} takes no query parameter {name!r}"
                + (f" (it takes {', '.join(sorted(known))})" if known else ""),
                field=name,
            )


def _query_params(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += _query_params(sub)
    return found


_bearer = HTTPBearer(auto_error=False, description="an operator token: `rtpo_<id>_<secret>`")


def operator_app(service: OperatorService) -> FastAPI:
    """The operator API on `service`."""
    app = FastAPI(
        title="rtpswitch operator API",
        version=API_VERSION,
        description=(
            "Monitoring and operating the switch: participants, positions, the journal, "
            "payments with their messages, conservation, alerts, approvals (maker-checker), "
            "operator tokens and the audit log. Every /v1 call needs an operator token "
            "(Bearer); errors are RFC 9457 problems with `code` and `field`."
        ),
        openapi_url=f"/v{API_VERSION}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    money = service.money
    exponent = service.exponent

    async def operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Operator:
        return await service.authenticate(None if credentials is None else credentials.credentials)

    def role(needed: Role) -> Callable[..., Any]:
        async def check(who: Annotated[Operator, Depends(operator)]) -> Operator:
            service.require(who, needed)
            return who

        return check

    Viewer = Annotated[Operator, Depends(role(Role.VIEWER))]
    Operates = Annotated[Operator, Depends(role(Role.OPERATOR))]
    Admin = Annotated[Operator, Depends(role(Role.ADMIN))]
    ParticipantId = Annotated[str, Path(description="the participant's BICFI", max_length=11)]

    def minor(text: str, field: str, *, positive: bool = True) -> int:
        """An amount in minor units; 422 naming `field` if it has too many decimals (or,
        when `positive`, is zero)."""
        try:
            value = to_minor(Decimal(text), exponent)
        except ValueError:
            raise ApiProblem(
                422,
                "invalid_amount",
                f"{text} has more than {exponent} decimals",
                field=field,
            ) from None
        if positive and value <= 0:
            raise ApiProblem(422, "invalid_amount", "the amount must be positive", field=field)
        return value

    def limit_of(text: str | None, field: str) -> Money | None:
        if text is None:
            return None
        return Money(minor=minor(text, field), currency=service.currency, exponent=exponent)

    def participant_out(p: Participant, connected: bool | None = None) -> ParticipantOut:
        return ParticipantOut(**service.participant_view(p), connected=connected)

    def approval_out(a: Approval) -> ApprovalOut:
        return ApprovalOut.model_validate(service.approval_view(a))

    def payment_out(p: PaymentRecord) -> PaymentOut:
        return PaymentOut(
            id=p.id,
            uetr=p.uetr,
            msg_id=p.msg_id,
            end_to_end_id=p.end_to_end_id,
            tx_id=p.tx_id,
            debtor_agent=p.debtor_agent,
            creditor_agent=p.creditor_agent,
            amount=money(p.amount),
            state=p.state,
            reason=p.reason,
            created_at=p.created_at,
            updated_at=p.updated_at,
            deadline=p.deadline,
        )

    def message_out(m: ArchivedMessage, with_xml: bool) -> MessageOut:
        return MessageOut(
            id=m.id,
            direction=m.direction,
            participant=m.participant,
            msg_type=m.msg_type,
            biz_msg_id=m.biz_msg_id,
            sha256=m.sha256,
            at=m.at,
            sent_at=m.sent_at,
            in_reply_to=m.in_reply_to,
            xml=m.raw.decode("utf-8", "replace") if with_xml else None,
        )

    def entries_out(entries: Sequence[Any]) -> list[JournalEntryOut]:
        return [
            JournalEntryOut(
                kind=e.kind, debit=e.debit, credit=e.credit, amount=money(e.amount), ref=e.ref
            )
            for e in entries
        ]

    # --- health, readiness, metrics, the dashboard -----------------------------------------

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness: the process answers",
        response_model=HealthOut,
    )
    async def healthz() -> HealthOut:
        return HealthOut(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: database, broker, schemas and engine",
        response_model=ReadinessOut,
        responses={
            503: {"model": ReadinessOut, "description": "something the switch needs is not ready"}
        },
    )
    async def readyz() -> JSONResponse:
        checks = await service.readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            ReadinessOut(ready=ready, checks=checks).model_dump(mode="json"),
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "the Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **_problems(),
        },
    )
    async def metrics(who: Viewer) -> Response:
        body, content_type = await render_metrics(service.engine, service.transport)
        return Response(body, media_type=content_type)

    app.include_router(dashboard_router())

    router = APIRouter(prefix=f"/v{API_VERSION}", dependencies=[Depends(_known_query_parameters)])

    @router.get(
        "/dashboard",
        tags=["dashboard"],
        summary="Everything the dashboard shows",
        response_model=DashboardOut,
        responses=_problems(),
    )
    async def dashboard(who: Viewer) -> DashboardOut:
        return DashboardOut.model_validate(await service.dashboard())

    # --- participants --------------------------------------------------------------------

    @router.get(
        "/participants",
        tags=["participants"],
        summary="List participants with status, limit, position and connectivity",
        response_model=ParticipantList,
        responses=_problems(),
    )
    async def list_participants(who: Viewer) -> ParticipantList:
        participants = service.participants()
        connected = await service.connectivity([p.id for p in participants])
        return ParticipantList(
            currency=service.currency,
            participants=[participant_out(p, connected[p.id]) for p in participants],
        )

    @router.post(
        "/participants",
        tags=["participants"],
        summary="Onboard a participant (admin)",
        status_code=201,
        response_model=ParticipantOut,
        responses=_problems(409, 413),
    )
    async def onboard(who: Admin, body: Onboarding) -> ParticipantOut:
        try:
            new = Participant(
                id=body.id,
                member_id=body.member_id,
                name=body.name,
                limit=limit_of(body.limit, "limit"),
            )
        except ValueError as exc:
            raise ApiProblem(422, "invalid_participant", str(exc), field="id") from None
        await service.operate(
            OperatorCommand(
                action=Action.ONBOARD,
                participant=new.id,
                actor=who.name,
                role=who.role,
                new=new,
            )
        )
        return participant_out(service.participant(new.id))

    @router.get(
        "/participants/{participant}",
        tags=["participants"],
        summary="One participant",
        response_model=ParticipantOut,
        responses=_problems(404),
    )
    async def get_participant(who: Viewer, participant: ParticipantId) -> ParticipantOut:
        p = service.participant(participant)
        connected = await service.connectivity([p.id])
        return participant_out(p, connected[p.id])

    def status_change(action: Action) -> Callable[..., Any]:
        async def change(who: Operates, participant: ParticipantId) -> ParticipantOut:
            service.participant(participant)
            await service.operate(
                OperatorCommand(
                    action=action, participant=participant, actor=who.name, role=who.role
                )
            )
            return participant_out(service.participant(participant))

        return change

    for verb, action, text in (
        ("suspend", Action.SUSPEND, "Suspend a participant: its payments are rejected"),
        ("resume", Action.RESUME, "Resume a suspended participant"),
    ):
        router.add_api_route(
            f"/participants/{{participant}}/{verb}",
            status_change(action),
            methods=["POST"],
            tags=["participants"],
            summary=f"{text} (operator)",
            response_model=ParticipantOut,
            responses=_problems(404, 409),
            name=verb,
        )

    @router.put(
        "/participants/{participant}/limit",
        tags=["participants"],
        summary="Set or remove a participant's per-payment limit (admin)",
        response_model=ParticipantOut,
        responses=_problems(404, 409, 413),
    )
    async def set_limit(
        who: Admin, participant: ParticipantId, body: LimitChange
    ) -> ParticipantOut:
        service.participant(participant)
        await service.operate(
            OperatorCommand(
                action=Action.SET_LIMIT,
                participant=participant,
                actor=who.name,
                role=who.role,
                limit=limit_of(body.limit, "limit"),
            )
        )
        return participant_out(service.participant(participant))

    def money_move(action: Action) -> Callable[..., Any]:
        async def move(who: Operates, participant: ParticipantId, body: MoneyMove) -> JSONResponse:
            done = await service.move_money(
                action, participant, minor(body.amount, "amount"), body.reference, who
            )
            if isinstance(done, Approval):
                result = MoveResult(status="pending_approval", approval=approval_out(done))
                return JSONResponse(result.model_dump(mode="json"), status_code=202)
            result = MoveResult(
                status="done",
                participant=participant_out(service.participant(participant)),
                journal=entries_out(done.journal),
            )
            return JSONResponse(result.model_dump(mode="json"), status_code=200)

        return move

    for verb, action in (("fund", Action.FUND), ("defund", Action.DEFUND)):
        router.add_api_route(
            f"/participants/{{participant}}/{verb}",
            money_move(action),
            methods=["POST"],
            tags=["positions"],
            summary=(
                f"{verb.capitalize()} a participant's position (operator); above the "
                "approval threshold it waits for a second operator (202)"
            ),
            response_model=MoveResult,
            responses={
                202: {"model": MoveResult, "description": "waits for approval"},
                **_problems(404, 409, 413),
            },
            name=verb,
        )

    # --- positions and the journal -------------------------------------------------------

    @router.get(
        "/positions",
        tags=["positions"],
        summary="Every participant's available and reserved position",
        response_model=PositionsOut,
        responses=_problems(),
    )
    async def positions(who: Viewer) -> PositionsOut:
        out: dict[str, PositionOut] = {}
        total_available = total_reserved = 0
        for p in service.participants():
            pos = service.position(p.id)
            out[p.id] = PositionOut(available=money(pos.available), reserved=money(pos.reserved))
            total_available += pos.available
            total_reserved += pos.reserved
        return PositionsOut(
            currency=service.currency,
            positions=out,
            total_available=money(total_available),
            total_reserved=money(total_reserved),
        )

    @router.get(
        "/journal",
        tags=["positions"],
        summary="The settlement journal, newest first",
        response_model=JournalPage,
        responses=_problems(),
    )
    async def journal(
        who: Viewer,
        participant: Annotated[str | None, Query(max_length=11)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> JournalPage:
        rows = await service.store.journal_page(
            before=_seq_cursor(cursor), limit=limit, participant=participant
        )
        return JournalPage(
            entries=[JournalOut(seq=r.seq, at=r.at, entry=entries_out([r.entry])[0]) for r in rows],
            next=_encode_cursor(rows[-1].seq) if len(rows) == limit else None,
        )

    # --- payments ------------------------------------------------------------------------

    @router.get(
        "/payments",
        tags=["payments"],
        summary="Search payments, newest first",
        response_model=PaymentPage,
        responses=_problems(),
    )
    async def search_payments(
        who: Viewer,
        state: PaymentState | None = None,
        participant: Annotated[
            str | None, Query(max_length=11, description="debtor or creditor agent")
        ] = None,
        since: Annotated[datetime | None, Query(description="created at or after")] = None,
        until: Annotated[datetime | None, Query(description="created before")] = None,
        min_amount: Annotated[str | None, Query(pattern=AMOUNT_PATTERN)] = None,
        max_amount: Annotated[str | None, Query(pattern=AMOUNT_PATTERN)] = None,
        uetr: Annotated[str | None, Query(max_length=36)] = None,
        reason: Annotated[str | None, Query(max_length=4)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
    ) -> PaymentPage:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise ApiProblem(
                    422, "invalid_time", f"{name} needs a time zone (e.g. Z)", field=name
                )
        low = None if min_amount is None else minor(min_amount, "min_amount", positive=False)
        high = None if max_amount is None else minor(max_amount, "max_amount", positive=False)
        query = PaymentQuery(
            state=state,
            participant=participant,
            since=since,
            until=until,
            min_amount=low,
            max_amount=high,
            uetr=uetr.lower() if uetr else None,
            reason=reason,
            limit=limit,
            before=_payment_cursor(cursor),
        )
        found = await service.store.search_payments(query)
        last = found[-1] if len(found) == limit else None
        return PaymentPage(
            payments=[payment_out(p) for p in found],
            next=None if last is None else _encode_cursor([last.created_at.isoformat(), last.id]),
        )

    @router.get(
        "/payments/{key}",
        tags=["payments"],
        summary="One payment (by id or UETR) with its state transitions and message trail",
        response_model=PaymentDetail,
        responses=_problems(404),
    )
    async def get_payment(
        who: Viewer,
        key: Annotated[str, Path(max_length=64, description="payment id or UETR")],
        xml: Annotated[bool, Query(description="include each message as sent")] = False,
    ) -> PaymentDetail:
        trail = await service.trail(key)
        return PaymentDetail(
            payment=payment_out(trail.payment),
            transitions=[
                TransitionOut(state=t.state, event=t.event, at=t.at, reason=t.reason)
                for t in trail.transitions
            ],
            messages=[message_out(m, xml) for m in trail.messages],
        )

    # --- conservation and alerts ---------------------------------------------------------

    @router.get(
        "/conservation",
        tags=["positions"],
        summary="The conservation check, in memory and in the database",
        response_model=ConservationOut,
        responses=_problems(),
    )
    async def conservation(who: Viewer) -> ConservationOut:
        return ConservationOut.model_validate(await service.conservation())

    @router.get(
        "/alerts",
        tags=["alerts"],
        summary="The alerts standing now, most severe first",
        response_model=list[AlertOut],
        responses=_problems(),
    )
    async def alerts(who: Viewer) -> list[AlertOut]:
        return [AlertOut(**alert_view(a)) for a in await service.current_alerts()]

    # --- approvals -----------------------------------------------------------------------

    @router.get(
        "/approvals",
        tags=["approvals"],
        summary="Funding requests waiting for (or decided by) a second operator",
        response_model=list[ApprovalOut],
        responses=_problems(),
    )
    async def approvals(
        who: Viewer,
        state: ApprovalState | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[ApprovalOut]:
        found = await service.store.approvals(state=state, limit=limit)
        return [approval_out(a) for a in found]

    def approval_decision(approve: bool) -> Callable[..., Any]:
        async def decide(
            who: Operates,
            approval: Annotated[str, Path(max_length=64, description="the approval's id")],
        ) -> ApprovalOut:
            return approval_out(await service.decide_approval(approval, approve, who))

        return decide

    for verb, approve in (("approve", True), ("reject", False)):
        router.add_api_route(
            f"/approvals/{{approval}}/{verb}",
            approval_decision(approve),
            methods=["POST"],
            tags=["approvals"],
            summary=f"{verb.capitalize()} another operator's funding request (operator)",
            response_model=ApprovalOut,
            responses=_problems(404, 409),
            name=f"approval_{verb}",
        )

    # --- tokens and the audit log --------------------------------------------------------

    def token_out(t: Any) -> TokenOut:
        return TokenOut(
            id=t.id,
            name=t.name,
            role=t.role,
            created_at=t.created_at,
            created_by=t.created_by,
            revoked_at=t.revoked_at,
            revoked_by=t.revoked_by,
        )

    @router.get(
        "/tokens",
        tags=["tokens"],
        summary="Operator tokens (admin); secrets are never shown again",
        response_model=list[TokenOut],
        responses=_problems(),
    )
    async def tokens(who: Admin) -> list[TokenOut]:
        return [token_out(t) for t in await service.store.tokens()]

    @router.post(
        "/tokens",
        tags=["tokens"],
        summary="Issue an operator token (admin)",
        status_code=201,
        response_model=IssuedTokenOut,
        responses=_problems(413),
    )
    async def create_token(who: Admin, body: TokenRequest) -> IssuedTokenOut:
        token, text = await service.create_token(body.name, body.role, who)
        return IssuedTokenOut(**token_out(token).model_dump(), token=text)

    @router.delete(
        "/tokens/{token_id}",
        tags=["tokens"],
        summary="Revoke an operator token (admin)",
        response_model=TokenOut,
        responses=_problems(404),
    )
    async def revoke_token(
        who: Admin, token_id: Annotated[str, Path(pattern=TOKEN_ID_PATTERN)]
    ) -> TokenOut:
        return token_out(await service.revoke_token(token_id, who))

    @router.get(
        "/audit",
        tags=["audit"],
        summary="The audit log of every state-changing call, newest first",
        response_model=AuditPage,
        responses=_problems(),
    )
    async def audit(
        who: Viewer,
        actor: Annotated[str | None, Query(max_length=64)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        target: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> AuditPage:
        records = await service.store.audit_log(
            before=_seq_cursor(cursor), limit=limit, actor=actor, action=action, target=target
        )
        return AuditPage(
            records=[
                AuditOut(
                    seq=r.seq,
                    at=r.at,
                    actor=r.actor,
                    role=r.role,
                    action=r.action,
                    target=r.target,
                    before=dict(r.before) if r.before is not None else None,
                    after=dict(r.after) if r.after is not None else None,
                    approval=r.approval,
                )
                for r in records
            ],
            next=(
                _encode_cursor(records[-1].seq)
                if len(records) == limit and records[-1].seq
                else None
            ),
        )

    app.include_router(router)
    install_handlers(app, extra={Refused: _refused})
    problems_as_problem_json(app)
    return app


# --- serving -------------------------------------------------------------------------------


async def start_operator_api(
    service: OperatorService,
    *,
    pki_dir: FilePath | str,
    host: str,
    port: int,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    access_log: bool = False,
) -> ApiServer:
    """Serve the operator API and dashboard over HTTPS; the started server."""
    await service.start()
    server = ApiServer(
        operator_app(service),
        host=host,
        port=port,
        ssl_context=scheme_ssl_context(pki_dir, hostnames=hostnames, client_certificates=False),
        check=None,
        access_log=access_log,
    )
    try:
        await server.start()
    except BaseException:
        await service.stop()
        raise
    return server
