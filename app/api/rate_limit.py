"""Per-org and per-IP rate limits (filled in by the rate-limit work)."""

from __future__ import annotations

from limits import RateLimitItem, parse


def parse_limit(value: str) -> RateLimitItem:
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"invalid rate limit {value!r}; use e.g. '1000/15minutes' or '100/minute'") from None
