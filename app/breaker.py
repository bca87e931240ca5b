"""A circuit breaker for optional Redis reads on the request path.

A call bounded by a timeout still costs that timeout on every request while Redis stalls. After
a failure the breaker stays open for a short cool-down: callers skip the call (and take their
degraded path at once), then try again; one request per cool-down pays the timeout, not all.
"""

from __future__ import annotations

import time


class Breaker:
    def __init__(self, *, cooldown_s: float = 1.0) -> None:
        self.cooldown_s = cooldown_s
        self._closed_at = 0.0  # monotonic time from which calls are tried again

    @property
    def open(self) -> bool:
        return time.monotonic() < self._closed_at

    def failed(self) -> None:
        self._closed_at = time.monotonic() + self.cooldown_s
