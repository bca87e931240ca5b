"""Every exception becomes an envelope here, and only here. Nothing leaks a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from app.api.envelope import failure
from app.api.middleware import internal_error
from app.errors import AppError, ServiceUnavailable, field_error

log = logging.getLogger("lehnz.api")

_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
}


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return failure(exc.status_code, exc.message, exc.error, headers=exc.headers())


async def _request_validation(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for query/path/body parameters becomes our 400 with field errors."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header")]
        errors.append(field_error(".".join(loc) or "(request)", str(err.get("msg", "invalid"))))
    return failure(400, f"Validation failed: {len(errors)} problem(s)", errors)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code) or str(exc.detail)
    if exc.status_code == 404 and exc.detail and exc.detail != "Not Found":
        message = str(exc.detail)
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request) or (headers or {}).get("Allow", "")}
    return failure(exc.status_code, message, message, headers=headers)


_HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


def _allowed_methods(request: Request) -> str:
    """Starlette's 405 names only the first route matching the path; one path may have several.

    Read from the OpenAPI document (built once, cached by FastAPI), the public list of routes.
    """
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].fullmatch(request.url.path):
            methods |= {method.upper() for method in operations if method.upper() in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _dependency_down(request: Request, exc: Exception) -> Response:
    """Redis or Postgres unreachable while serving a request: 503, the client retries."""
    log.warning("dependency unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    unavailable = ServiceUnavailable()
    return failure(503, unavailable.message, unavailable.error, headers=unavailable.headers())


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Normally RequestContextMiddleware answers first; this covers anything outside it.
    request_id = getattr(request.state, "request_id", None)
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, request_id)
    return internal_error(request_id)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RedisError, _dependency_down)
    # e.g. connection refused or timed out before a driver wrapped it
    app.add_exception_handler(ConnectionError, _dependency_down)
    app.add_exception_handler(TimeoutError, _dependency_down)
    app.add_exception_handler(OperationalError, _dependency_down)
    app.add_exception_handler(InterfaceError, _dependency_down)
    app.add_exception_handler(DBAPIError, _db_error)
    app.add_exception_handler(Exception, _unexpected)


async def _db_error(request: Request, exc: Exception) -> Response:
    # Connection-level DBAPI errors mean the database is away; anything else is our bug.
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated or _is_connection_error(exc.orig):
        return await _dependency_down(request, exc)
    return await _unexpected(request, exc)


def _is_connection_error(orig: BaseException | None) -> bool:
    name = type(orig).__name__ if orig is not None else ""
    return any(word in name for word in ("Connection", "CannotConnectNow", "TooManyConnections"))
