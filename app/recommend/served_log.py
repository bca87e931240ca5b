"""The served-recommendation log, buffered in the api process and flushed in batches.

Recording a served recommendation must not add a write to the request path: rows go to an
in-memory buffer and a background task queues them every half second, one job per batch,
for the worker to persist. If Redis is away the buffer keeps up to `max_rows` (then drops
the oldest, counted in the log), so a Redis outage never slows or fails a recommendation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from app import metrics
from app.queue import Queue

log = logging.getLogger("lehnz.served")

_BATCH = 500


class ServedLog:
    def __init__(self, queue: Queue, *, flush_interval_s: float = 0.5, max_rows: int = 50_000) -> None:
        self._queue = queue
        self._interval = flush_interval_s
        self._rows: deque[dict[str, Any]] = deque(maxlen=max_rows)
        self._dropped_warned = False

    def add(self, row: dict[str, Any]) -> None:
        if len(self._rows) == self._rows.maxlen:  # the append below drops the oldest row
            metrics.SERVED_LOG_DROPPED.inc()
            if not self._dropped_warned:
                log.warning("served-recommendation buffer full; oldest rows are being dropped")
                self._dropped_warned = True
        self._rows.append(row)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval)
            with contextlib.suppress(Exception):
                await self.flush()

    async def flush(self) -> None:
        try:
            while self._rows:
                batch = [self._rows[i] for i in range(min(_BATCH, len(self._rows)))]
                await self._queue.enqueue_served(batch)  # raises if Redis is away: rows stay buffered
                # Remove what was sent by identity: while the enqueue awaited, a full buffer may
                # have pushed some of these rows out already (they were sent all the same).
                sent = {id(row) for row in batch}
                while self._rows and id(self._rows[0]) in sent:
                    self._rows.popleft()
                self._dropped_warned = False
        finally:
            metrics.SERVED_LOG_BUFFERED.set(len(self._rows))
