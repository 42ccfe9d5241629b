"""RFC 9457 problem answers shared by the switch's HTTPS APIs.

Every error either API gives is a problem (`application/problem+json`): `type`
(`urn:rtpswitch:problem:<code>`), `title`, `status`, `detail`, and the switch's own
`code` and `field` (the request field at fault, when there is one); a malformed body,
path or query names every field at fault in `errors`. `install_handlers` makes an app
answer this way for its own refusals (`ApiProblem`), for FastAPI's validation errors,
for Starlette's HTTP errors (unknown path, wrong method), for an unreachable store
(503 with `Retry-After`) and for a bug (500, logged with its traceback; the answer says
nothing of the switch's internals). `BodyLimit` refuses oversized bodies before they
are buffered.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switch.core.errors import InternalError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ApiProblem",
    "BodyLimit",
    "FieldProblem",
    "Problem",
    "install_handlers",
    "problem_response",
    "problem_responses",
    "problems_as_problem_json",
    "store_errors",
    "unavailable",
    "unreadable_body",
]

log = logging.getLogger("rtpswitch.api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"


class FieldProblem(BaseModel):
    """One field of a malformed request and what is wrong with it."""

    field: str | None
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong, with the switch's code and the field at fault."""

    type: str = Field(description="`urn:rtpswitch:problem:<code>`")
    title: str = Field(description="a short summary of the problem's code")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="what exactly is wrong with this request")
    code: str = Field(description="a stable code: the directory's, or the API's")
    field: str | None = Field(description="the request field at fault, if there is one")
    errors: list[FieldProblem] | None = Field(
        default=None, description="every field at fault, for a malformed request"
    )


class ApiProblem(Exception):
    """Refuse a request with a problem body."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        field: str | None = None,
        errors: Sequence[FieldProblem] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ")
        self.field = field
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


def problem_response(problem: ApiProblem) -> JSONResponse:
    """The answer that carries `problem`."""
    body = Problem(
        type=f"urn:rtpswitch:problem:{problem.code}",
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        code=problem.code,
        field=problem.field,
        errors=problem.errors,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True) | {"field": problem.field},
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _field_of(loc: Sequence[Any]) -> str | None:
    """The request field a validation error's location names ("body", "path" ... first)."""
    names = [str(part) for part in loc[1:] if isinstance(part, str)]
    if names:
        return ".".join(names)
    return "body" if loc and loc[0] == "body" else None


def validation_problem(exc: RequestValidationError) -> ApiProblem:
    """A 422 `invalid_request` naming every field FastAPI's validation refused."""
    errors = []
    for error in exc.errors():
        loc = error.get("loc", ())
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif error.get("type") == "missing" and tuple(loc) == ("body",):
            message = "the request needs a JSON body"
        errors.append(FieldProblem(field=_field_of(loc), detail=message))
    first = errors[0] if errors else FieldProblem(field=None, detail="the request is malformed")
    detail = "; ".join(f"{e.field}: {e.detail}" if e.field else e.detail for e in errors)
    return ApiProblem(
        422,
        "invalid_request",
        detail or first.detail,
        title="the request is malformed",
        field=first.field,
        errors=errors,
    )


def unreadable_body() -> ApiProblem:
    """The 422 for a body FastAPI could not even decode (not UTF-8): as for invalid JSON."""
    message = "the body is not valid JSON"
    return ApiProblem(
        422,
        "invalid_request",
        f"body: {message}",
        title="the request is malformed",
        field="body",
        errors=[FieldProblem(field="body", detail=message)],
    )


HTTP_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "no_such_resource",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
}
"""The problem code of each HTTP error Starlette raises by itself."""


def store_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean the store cannot be reached or used now."""
    return (OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError)


def unavailable(exc: BaseException, what: str = "the store") -> ApiProblem:
    """503: the store failed; logged, and the client is told to try again."""
    log.error("%s unavailable: %s: %s", what, type(exc).__name__, exc)
    return ApiProblem(
        503,
        "unavailable",
        f"{what} cannot be reached now; try again",
        headers={"Retry-After": "1"},
    )


def problem_responses(
    texts: Mapping[int, str], statuses: Iterable[int]
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the problem answers with `statuses`, each described by
    its text in `texts`."""
    return {
        status: {
            "model": Problem,
            "description": texts[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted(set(statuses))
    }


def problems_as_problem_json(app: FastAPI) -> None:
    """Error answers are described as `application/problem+json` only, as they are sent."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[:1] in ("4", "5") and PROBLEM_MEDIA_TYPE in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def install_handlers(
    app: FastAPI,
    *,
    extra: Mapping[type[Exception], Callable[[Exception], ApiProblem]] | None = None,
    store: str = "the store",
) -> None:
    """Every error `app` meets answers a problem body; `extra` maps more exception types
    (an API's own domain errors) to their problems."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return problem_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8): a malformed
            # body, answered like one that is not JSON rather than as an undocumented 400
            return problem_response(unreadable_body())
        code = HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is no {request.url.path}"
        return problem_response(
            ApiProblem(exc.status_code, code, detail, headers=dict(exc.headers or {}))
        )

    async def on_store(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(unavailable(exc, store))

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        kind = "internal error" if isinstance(exc, InternalError) else "unexpected error"
        log.error("%s answering %s %s", kind, request.method, request.url.path, exc_info=exc)
        return problem_response(
            ApiProblem(500, "internal_error", "the switch failed to answer this request")
        )

    def mapped(convert: Callable[[Exception], ApiProblem]) -> Handler:
        async def on_mapped(request: Request, exc: Exception) -> JSONResponse:
            return problem_response(convert(exc))

        return on_mapped

    app.add_exception_handler(ApiProblem, on_problem)
    for kind, convert in (extra or {}).items():
        app.add_exception_handler(kind, mapped(convert))
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for error in store_errors():
        app.add_exception_handler(error, on_store)
    app.add_exception_handler(InternalError, on_bug)
    app.add_exception_handler(Exception, on_bug)


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413) before they are buffered."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiProblem(
            413, "body_too_large", f"a request body is at most {self.limit} bytes"
        )
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await problem_response(too_large)(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, too_large.detail)
            return message

        await self.app(scope, limited, send)
