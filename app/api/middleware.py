"""Pure ASGI middleware: request id, body-size cap (413), timing, one access-log line per request;
trailing-slash tolerance (never a redirect); CORS for the browser-facing endpoints."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api.envelope import JsonResponse, failure
from app.errors import FieldErrors, PayloadTooLarge, field_error

access_log = logging.getLogger("lehnz.access")
error_log = logging.getLogger("lehnz.api")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log_enabled: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        headers = _headers(scope)
        request_id = headers.get("x-request-id", "")
        if not _SANE_REQUEST_ID.match(request_id):
            request_id = os.urandom(16).hex()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = [500]
        response_started = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                window = state.get("rate_limit")
                if window is not None:  # set by the rate limiter on every authenticated request
                    extra.extend(window.headers())
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            # Refuse before reading a byte of it.
            response = failure(413, f"Body over the size limit of {self.max_body_bytes} bytes")
            await response(scope, receive, send_wrapper)
        else:
            try:
                await self.app(scope, self._capped(receive), send_wrapper)
            except Exception:  # noqa: BLE001 - the last resort: a 500 envelope, never a stack trace
                # Anything no handler claimed: log it with the request id, answer a 500
                # envelope that says nothing about the cause (unless a response already began).
                error_log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"],
                                    request_id)
                if not response_started[0]:
                    await internal_error(request_id)(scope, receive, send_wrapper)

        elapsed_s = time.perf_counter() - started
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "(unmatched)"
        metrics.observe_request(route_path, scope["method"], status_holder[0], elapsed_s)
        if self.access_log_enabled:
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "org": state.get("org_slug"),
                    "method": scope["method"],
                    "route": route_path,
                    "status": status_holder[0],
                    "latency_ms": round(elapsed_s * 1000, 2),
                },
            )

    def _capped(self, receive: Receive) -> Receive:
        """A chunked body without Content-Length is counted as it arrives."""
        received = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"Body over the size limit of {limit} bytes")
            return message

        return wrapped


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


class TrailingSlash:
    """`POST /v1/recommend/` is served as `POST /v1/recommend`, instead of Starlette's 307 whose
    Location is built from the request's Host header: a redirect a storefront's POST may not
    follow, pointing at whatever host the client claimed. A path ending in `/` loses its slashes
    when that matches a route better than the path as it is (a route and method over none, or
    over a route of another method), so an id ending in `/` (`DELETE /v1/users/a/`, the user
    "a/") keeps it, and a path without one costs nothing. The app is built with
    `redirect_slashes=False`, so an unknown path is a 404 envelope, never a redirect.
    """

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the router's own list: routes added later are seen too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            raw: bytes = scope.get("raw_path") or path.encode()
            trimmed = {"path": path.rstrip("/") or "/", "raw_path": raw.rstrip(b"/") or b"/"}
            if self._best_match({**scope, **trimmed}) > self._best_match(scope):
                # In place: the outer middleware reads the matched route from this same scope.
                scope.update(trimmed)
        await self.app(scope, receive, send)

    def _best_match(self, scope: Scope) -> int:
        # FULL: path and method; PARTIAL: the path, with another method (a 405); NONE (a 404).
        # On a copy of the scope: FastAPI's matching notes its progress in it.
        return max((route.matches({**scope})[0].value for route in self.routes), default=Match.NONE.value)


# The request headers a storefront's fetch() sends to events ingest and recommend: the JSON
# Content-Type and the key, a request id for tracing, and W3C trace context (browser APM agents
# add it when told to trace calls to this API). The CORS-safelisted ones (Accept, ...) are
# always allowed. A preflight asking for anything else is refused in the envelope.
CORS_ALLOWED_HEADERS = ("Content-Type", "X-API-KEY", "X-Request-ID", "traceparent", "tracestate")


class _EnvelopedCors(CORSMiddleware):
    """Starlette's CORS, but a refused preflight is a 400 envelope that says what was refused
    (its own answer is the plain text "Disallowed CORS headers")."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        problems = self._refusals(request_headers) or [
            field_error("Access-Control-Request-Headers", "not a comma-separated list of header names")
        ]
        headers = {k: v for k, v in response.headers.items() if k.startswith("access-control-") or k == "vary"}
        message = "CORS preflight refused: " + "; ".join(f"{p['field']} {p['issue']}" for p in problems)
        return failure(400, message, problems, headers=headers)

    def _refusals(self, request_headers: Headers) -> FieldErrors:
        problems: FieldErrors = []
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            problems.append(field_error("Origin", "is not one of the origins in LEHNZ_CORS_ORIGINS"))
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            allowed = ", ".join(self.allow_methods)
            problems.append(
                field_error("Access-Control-Request-Method", f"{method[:16]} is not allowed (allowed: {allowed})")
            )
        requested = [h.strip() for h in request_headers.get("access-control-request-headers", "").split(",")]
        refused = [h[:64] for h in requested if h and h.lower() not in self.allow_headers]
        if refused:
            allowed = ", ".join(sorted({*CORS_ALLOWED_HEADERS, "Accept", "Accept-Language", "Content-Language"}))
            problems.append(field_error(
                "Access-Control-Request-Headers", f"{', '.join(refused)} not allowed (allowed: {allowed})"
            ))
        if "access-control-request-private-network" in request_headers and not self.allow_private_network:
            problems.append(field_error("Access-Control-Request-Private-Network", "is not allowed"))
        return problems


class PublishableCors:
    """CORS for the browser-facing (publishable-key) endpoints only.

    Storefront pages call events ingest and recommend from any origin; secret endpoints must
    never be callable from a browser, so they get no CORS headers at all.
    """

    def __init__(self, app: ASGIApp, *, paths: frozenset[str], **cors_options: Any) -> None:
        self.app = app
        self.paths = paths
        self.cors = _EnvelopedCors(app, **cors_options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def internal_error(request_id: str | None) -> JsonResponse:
    """The 500 body: the request id to quote to an operator, never the cause."""
    message = f"Internal server error (request {request_id})" if request_id else "Internal server error"
    return failure(500, message, "internal_error")
