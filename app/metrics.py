"""Prometheus series of the api process. Values owned by the worker (persisted records, training)
live in Redis and are read at scrape time by `collect_shared`, so every api replica can show them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_LATENCY = Histogram(
    "lehnz_http_request_duration_seconds",
    "Time to answer an HTTP request, per route template",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "lehnz_http_requests_total", "HTTP responses by route and status", ["route", "method", "status"], registry=REGISTRY
)
RECOMMEND_LATENCY = Histogram(
    "lehnz_recommend_duration_seconds",
    "Server-side time to compute a recommendation, per canonical strategy",
    ["strategy"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RECOMMEND_SERVED = Counter(
    "lehnz_recommend_served_total", "Recommendations served, per canonical strategy", ["strategy"], registry=REGISTRY
)
RECOMMEND_FALLBACK = Counter(
    "lehnz_recommend_fallback_total",
    "Recommendations answered by the strategy's fallback (fallback rate = this / served)",
    ["strategy"],
    registry=REGISTRY,
)
REALTIME_UNAVAILABLE = Counter(
    "lehnz_recommend_realtime_unavailable_total",
    "Recommendations for a user answered without their real-time state (Redis failed or was being skipped)",
    registry=REGISTRY,
)
SERVED_LOG_BUFFERED = Gauge(
    "lehnz_served_log_buffered",
    "Served-recommendation log rows waiting in this api process for Redis (analytics)",
    registry=REGISTRY,
)
SERVED_LOG_DROPPED = Counter(
    "lehnz_served_log_dropped_total",
    "Served-recommendation log rows dropped because the buffer was full while Redis was away",
    registry=REGISTRY,
)
INGEST_ACCEPTED = Counter(
    "lehnz_ingest_records_accepted_total", "Records accepted (202) by this api process", ["kind"], registry=REGISTRY
)
INGEST_REJECTED = Counter(
    "lehnz_ingest_requests_rejected_total",
    "Ingest requests refused because the queue was unreachable (503); other refusals: lehnz_http_requests_total",
    ["kind", "status"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "lehnz_rate_limit_rejections_total", "Requests refused with 429", ["scope"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge("lehnz_queue_depth", "Jobs waiting in each queue", ["queue"], registry=REGISTRY)
INGEST_PERSISTED = Gauge(
    "lehnz_ingest_records_persisted_total", "Records persisted by all workers (from Redis)", ["kind"], registry=REGISTRY
)
INGEST_FAILED = Gauge(
    "lehnz_ingest_records_failed_total",
    "Records parked in the dead-letter list by all workers (from Redis)",
    ["kind"],
    registry=REGISTRY,
)
TRAIN_DURATION = Gauge(
    "lehnz_train_duration_seconds", "Duration of the last successful train, per org", ["org"], registry=REGISTRY
)
TRAIN_LAST_SUCCESS = Gauge(
    "lehnz_train_last_success_timestamp_seconds", "Unix time of the last successful train, per org", ["org"],
    registry=REGISTRY,
)
MODEL_QUALITY = Gauge(
    "lehnz_model_quality_ndcg_at_10",
    "NDCG@10 of the serving personalized model on the org's holdout (its last model search)",
    ["org"],
    registry=REGISTRY,
)
MODEL_QUALITY_VS_POPULAR = Gauge(
    "lehnz_model_quality_vs_popular_ratio",
    "Holdout NDCG@10 of personalized / popular, per org (below 1: personalization does not beat popular)",
    ["org"],
    registry=REGISTRY,
)
# TRAIN_STATS hash fields "<org>:<what>" (written by the worker) -> the gauge /metrics shows them as.
TRAIN_STATS_GAUGES = {
    "duration_s": TRAIN_DURATION,
    "last_success": TRAIN_LAST_SUCCESS,
    "ndcg_at_10": MODEL_QUALITY,
    "vs_popular": MODEL_QUALITY_VS_POPULAR,
}
MODEL_LOADED = Gauge(
    "lehnz_model_trained_timestamp_seconds",
    "trained_at of the model this api process serves, per org and version",
    ["org", "version"],
    registry=REGISTRY,
)


def observe_request(route: str, method: str, status: int, elapsed_s: float) -> None:
    latency, requests = _request_series(route, method, status)
    latency.observe(elapsed_s)
    requests.inc()


# A series is looked up by its labels under a lock on every call: remember the few a process uses.
@lru_cache(maxsize=1024)
def _request_series(route: str, method: str, status: int) -> tuple[Any, Any]:
    return HTTP_LATENCY.labels(route, method), HTTP_REQUESTS.labels(route, method, str(status))


@lru_cache(maxsize=64)
def recommend_series(strategy: str) -> tuple[Any, Any, Any]:
    """(served, fallback, latency) of one canonical strategy."""
    return RECOMMEND_SERVED.labels(strategy), RECOMMEND_FALLBACK.labels(strategy), RECOMMEND_LATENCY.labels(strategy)


def forget_model(org_id: str, version: str | None) -> None:
    if version is None:
        return
    try:
        MODEL_LOADED.remove(org_id, version)
    except KeyError:
        pass
