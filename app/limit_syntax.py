"""The rate-limit syntax ("1000/15minutes", "100/minute"), read in one place: by the settings
(LEHNZ_RATE_LIMIT, LEHNZ_AUTH_RATE_LIMIT), `lehnz org set-limit` and the api's limiter. Kept out
of app/api so the settings and the CLI do not import the api to check a string."""

from __future__ import annotations

from functools import lru_cache

from limits import RateLimitItem, parse


@lru_cache(maxsize=256)
def parse_limit(value: str) -> RateLimitItem:
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"invalid rate limit {value!r}; use e.g. '1000/15minutes' or '100/minute'") from None
