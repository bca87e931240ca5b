"""The one rule for records of an erased user, on every path that stores them.

`DELETE /v1/users/{id}` leaves a tombstone: the user id and the time the erasure was requested
(app/queue.py). Whatever belongs to the time before it never comes back, whichever path it
takes (the ingest worker, `lehnz import`, a replayed dead letter): a record is dropped when it
was received before the erasure (queued before it, retried after it) or when it happened
before it (an event's timestamp, a profile's created_at: an offline app flushing its queue, a
storefront's outbox retrying, an old export). What was received and happened after the
erasure is new data: the shopper came back. docs/integration.md says the same.
"""

from __future__ import annotations


def before_erasure(erased_at: float | None, *, received_at: float, happened_at: float) -> bool:
    """True when a record of a user erased at `erased_at` (None: never erased) must not be stored."""
    return erased_at is not None and (received_at <= erased_at or happened_at <= erased_at)
