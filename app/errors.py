"""Domain errors, each with its HTTP status. Raised anywhere; rendered only by api/handlers.py."""

from __future__ import annotations

from typing import Any

FieldErrors = list[dict[str, str]]


class AppError(Exception):
    status_code = 500
    message = "Internal server error"

    def __init__(self, message: str | None = None, *, error: str | FieldErrors | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.error: str | FieldErrors | None = error if error is not None else self.message

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(AppError):
    """Malformed JSON, wrong Content-Type, schema violation, unknown strategy, out-of-range paging."""

    status_code = 400
    message = "Bad request"


class ValidationFailed(BadRequest):
    """A schema violation, with every bad field (and record index for batches) listed."""

    message = "Validation failed"

    def __init__(self, errors: FieldErrors, message: str | None = None) -> None:
        super().__init__(message or f"Validation failed: {len(errors)} problem(s)", error=errors)


class Unauthorized(AppError):
    status_code = 401
    message = "Missing or invalid API key"


class Forbidden(AppError):
    status_code = 403
    message = "Wrong key type for this endpoint"


class NotFound(AppError):
    status_code = 404
    message = "Not found"


class MethodNotAllowed(AppError):
    status_code = 405
    message = "Method not allowed"


class Conflict(AppError):
    status_code = 409
    message = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    message = "Payload too large"


class MissingStrategyInput(AppError):
    """The chosen strategy's required input is absent (e.g. `similar` without context_item_id)."""

    status_code = 422
    message = "Missing input for strategy"


class RateLimited(AppError):
    status_code = 429
    message = "Rate limit exceeded"

    def __init__(self, *, limit: int, reset_s: int, message: str | None = None) -> None:
        super().__init__(message or f"Rate limit exceeded: {limit} requests per window; retry in {reset_s} s")
        self.limit = limit
        self.reset_s = reset_s

    def headers(self) -> dict[str, str]:
        # RateLimit-Limit/-Remaining/-Reset are added to every limited response by the middleware.
        return {"Retry-After": str(self.reset_s)}


class ServiceUnavailable(AppError):
    """The queue or the database is unreachable: nothing was accepted; the client must retry."""

    status_code = 503
    message = "Service temporarily unavailable; nothing was accepted, retry with backoff"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def field_error(field: str, issue: str) -> dict[str, Any]:
    return {"field": field, "issue": issue}
