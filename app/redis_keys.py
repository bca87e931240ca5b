"""Every Redis key and channel name, in one place, so the api and the worker cannot drift apart.

Only the owner of each kind of state imports this module (app/storage/redis_state/__init__.py
lists them); everything else calls the owner's functions.
"""

from __future__ import annotations

PREFIX = "lehnz"

INGEST_QUEUE = f"{PREFIX}:queue:ingest"
TRAIN_QUEUE = f"{PREFIX}:queue:train"
DEAD_LETTER = f"{PREFIX}:dead-letter"          # list of jobs that could not be persisted (never dropped)
KEYS_EPOCH = f"{PREFIX}:keys:epoch"             # bumped on every key revocation: api caches drop keys
NEW_DATA = f"{PREFIX}:train:new-data"           # hash org_id -> events persisted since its last train
TRAIN_STATS = f"{PREFIX}:train:stats"           # hash "<org>:<field>" (TRAIN_STATS_FIELDS) for /metrics
# duration_s, last_success (unix s) of the last successful train; ndcg_at_10 and vs_popular of its model search.
TRAIN_STATS_FIELDS = ("duration_s", "last_success", "ndcg_at_10", "vs_popular")
INGEST_STATS = f"{PREFIX}:ingest:stats"         # hash "<kind>:persisted" / "<kind>:failed"
SERVING_ORGS = f"{PREFIX}:orgs:serving"         # set of org ids with a catalog or a model: api processes load them
DELETED_ORGS = f"{PREFIX}:orgs:deleted"         # set of org ids deleted (lehnz org delete): api processes drop them
SEARCH_REQUESTED = f"{PREFIX}:train:search"     # hash org_id -> time a model search was asked for (next train runs it)
# hash org_id -> time a train was asked for while one of the org ran (the scheduler queues one more)
TRAIN_AGAIN = f"{PREFIX}:train:again"


def pending(org_id: str) -> str:
    """Sorted set of this org's ingest job ids not yet persisted (queue_depth)."""
    return f"{PREFIX}:pending:{org_id}"


def recent(org_id: str, user_id: str) -> str:
    """Sorted set of a user's latest interactions (member = JSON, score = unix time)."""
    return f"{PREFIX}:recent:{org_id}:{user_id}"


def recent_of_org(org_id: str) -> str:
    """Glob pattern of every recent() key of the org (one per user)."""
    return f"{PREFIX}:recent:{glob_escape(org_id)}:*"


def aliases(org_id: str) -> str:
    """Hash alias user id -> canonical user id (identity stitching)."""
    return f"{PREFIX}:alias:{org_id}"


def erased(org_id: str) -> str:
    """Hash user id -> unix time of an erasure request: events older than that are dropped."""
    return f"{PREFIX}:erased:{org_id}"


def model_version(org_id: str) -> str:
    return f"{PREFIX}:model:{org_id}:version"


def catalog_version(org_id: str) -> str:
    return f"{PREFIX}:catalog:{org_id}:version"


def training(org_id: str) -> str:
    """Set while a train of this org runs (with a TTL, so a crashed worker does not leave it set)."""
    return f"{PREFIX}:training:{org_id}"


_TRAIN_JOB = "train:"


def train_job_id(org_id: str) -> str:
    """arq _job_id: at most one pending train per org."""
    return f"{_TRAIN_JOB}{org_id}"


def train_job_org(job_id: str) -> str | None:
    """The org of a train job id (train_job_id's inverse); None for another job."""
    return job_id.removeprefix(_TRAIN_JOB) if job_id.startswith(_TRAIN_JOB) else None


def rate_limit(scope: str, key: str) -> str:
    return f"{PREFIX}:ratelimit:{scope}:{key}"


def org_rate_limits(org_id: str) -> str:
    """Glob pattern of the org's rate-limit window counters (scope "org", key "<org>:<window>")."""
    return f"{PREFIX}:ratelimit:org:{glob_escape(org_id)}:*"


def revoked_session(token_digest: str) -> str:
    """Set (until the token would have expired) when a dashboard session token is signed out."""
    return f"{PREFIX}:session:revoked:{token_digest}"


def key_last_used(org_id: str) -> str:
    """Hash key pair id -> unix time its keys were last used (written at most once a minute per api process)."""
    return f"{PREFIX}:keys:last-used:{org_id}"


def glob_escape(text: str) -> str:
    """text matched literally in a SCAN/KEYS pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
