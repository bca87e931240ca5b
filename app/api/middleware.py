"""Pure ASGI middleware: request id, body-size cap (413), timing, one access-log line per request."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api.envelope import JsonResponse, failure
from app.errors import PayloadTooLarge

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


class PublishableCors:
    """CORS for the browser-facing (publishable-key) endpoints only.

    Storefront pages call events ingest and recommend from any origin; secret endpoints must
    never be callable from a browser, so they get no CORS headers at all.
    """

    def __init__(self, app: ASGIApp, *, paths: frozenset[str], **cors_options: Any) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app = app
        self.paths = paths
        self.cors = CORSMiddleware(app, **cors_options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def internal_error(request_id: str | None) -> JsonResponse:
    """The 500 body: the request id to quote to an operator, never the cause."""
    message = f"Internal server error (request {request_id})" if request_id else "Internal server error"
    return failure(500, message, "internal_error")
