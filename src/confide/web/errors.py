"""Every error leaves as `{"error": {"code", "message"}}` with the right status.

Missing and forbidden objects are the same 404 (PM7). A database that cannot be
reached (or fails under the request) is a 503 with Retry-After: nothing was
acknowledged, the client sends again (with the same idempotency key). An unexpected
exception is a 500 with a generic body; its details go to the log without request data.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from confide.domain.errors import DomainError, TryLater
from confide.store.db import database_unavailable

log = logging.getLogger("confide.web")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


RETRY_AFTER_SECONDS = 1  # database unavailable: a restart or failover takes seconds


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "overloaded",
}


def _describe(errors: list[dict[str, object]]) -> tuple[str, str]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "malformed_json", "The request body is not valid JSON."
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]  # type: ignore[attr-defined]
    where = ".".join(loc) or "request"
    msg = str(first.get("msg", "invalid value"))
    return "invalid_input", f"{where}: {msg}"


def _answer(request: Request, status: int, code: str, message: str) -> Response:
    """JSON for the API; the pages' own error answer (HTML, or text for htmx) for page
    routes (`web/pages`, registered as `app.state.page_error`)."""
    page_error = getattr(request.app.state, "page_error", None)
    if page_error is not None and not request.url.path.startswith("/api/"):
        response: Response = page_error(request, status, code, message)
        return response
    return error_response(status, code, message)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        response = _answer(request, exc.status, exc.code, exc.message)
        if isinstance(exc, TryLater):  # 429 rate_limited, 503 overloaded (T11, T39)
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        code, message = _describe(list(exc.errors()))
        return _answer(request, 400 if code == "malformed_json" else 422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 400 and "parsing the body" in message:
            # FastAPI's words for a body it could not decode (bad UTF-8, too deep …).
            code, message = "malformed_json", "The request body is not valid JSON."
        if exc.status_code == 404:
            message = "No such resource."
        return _answer(request, exc.status_code, code, message)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> Response:
        if not database_unavailable(exc):
            raise exc  # a bug, not an outage: the 500 below, with its traceback logged
        route = request.scope.get("route")
        log.warning(
            "database unavailable (%s) on %s %s",
            type(exc).__name__,
            request.method,
            getattr(route, "path", "?"),
        )
        response = _answer(
            request,
            503,
            "database_unavailable",
            "The service is briefly unavailable. Nothing was saved; please try again.",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        route = request.scope.get("route")
        path = getattr(route, "path", "?")
        # Route template only: never the URL, query or body (they may hold PHI).
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, path)
        return _answer(request, 500, "internal_error", "Something went wrong on our side.")
