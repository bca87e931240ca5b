"""Soak (issue 6): mixed traffic for a long time against one api and one worker.

5 organisations (`soak_orgs`; 2 with --quick), each a synthetic shop (a fraction `soak_scale`
of the main dataset's size), preloaded with COPY and trained. Then an open-loop stream at
`soak_rate` requests/s: 80% recommend (personalized, similar, session_based,
frequently-bought-together, popular, trending, spread over the orgs) and 20% ingest (single
events and batches of 10). The api and worker run with the server's default training settings
(only the rate limit is lifted), so scheduled retrains and model hot-swaps happen during a long
soak as they would in production.

Reported: error rate (goal: no error other than 429), p99 and throughput per time bucket, RSS
of the api and worker over time with a least-squares slope after warm-up (goal: flat), and
events accepted (202) vs stored once the queue is drained (goal: equal).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.speed.loadgen import Template, percentiles
from benchmarks.speed.loading import copy_dataset, count_events
from benchmarks.speed.server import ResourceSampler, Stack
from benchmarks.speed.synthetic import synthetic

RECOMMEND_SHARE = 0.8
INGEST_BATCHES = (1, 10)
SOAK_STRATEGIES = ["personalized", "similar", "session_based", "frequently-bought-together", "popular", "trending"]
MB = 1024 * 1024


def rss_trend(t_s: np.ndarray, rss_mb: np.ndarray, *, warmup_s: float) -> dict[str, Any]:
    """Least-squares line through RSS after warm-up: slope, and growth projected over the window."""
    keep = t_s >= warmup_s
    t, y = t_s[keep], rss_mb[keep]
    if len(t) < 3 or np.ptp(t) <= 0:
        return {"samples": len(t), "slope_mb_per_min": None, "growth_mb": None, "mean_mb": None, "flat": None}
    slope, _ = np.polyfit(t / 60.0, y, 1)
    window_min = float(np.ptp(t)) / 60.0
    growth = float(slope * window_min)
    mean = float(np.mean(y))
    return {
        "samples": len(t),
        "window_s": float(np.ptp(t)),
        "slope_mb_per_min": float(slope),
        "growth_mb": growth,
        "mean_mb": mean,
        "start_mb": float(y[0]),
        "end_mb": float(y[-1]),
        "max_mb": float(np.max(y)),
        # flat: the fitted line grows by less than 5% of the mean (or 10 MB) over the window
        "flat": bool(growth < max(0.05 * mean, 10.0)),
    }


def run_soak(
    opts: Any, stack: Stack, sampler: ResourceSampler, loadgen: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    from benchmarks.ingest import batch_bodies, event_pool
    from benchmarks.speed.run import (
        MODES,
        RECOMMEND_PATH,
        Api,
        Variant,
        ask_train,
        drain,
        draw_samples,
        recent_sessions,
        recommend_bodies,
        wait_quiet,
        wait_serving,
        wait_trained,
    )

    items = max(50, int(opts.items * opts.soak_scale))
    interactions = max(500, int(opts.interactions * opts.soak_scale))
    users = max(20, int(opts.users * opts.soak_scale))
    n_orgs = opts.soak_orgs
    out: dict[str, Any] = {
        "orgs": n_orgs,
        "per_org": {"items": items, "interactions": interactions, "users": users},
        "duration_s": opts.soak_s,
        "rate_rps": opts.soak_rate,
        "concurrency": opts.soak_concurrency,
        "mix": {"recommend": RECOMMEND_SHARE, "ingest": round(1 - RECOMMEND_SHARE, 2),
                "strategies": SOAK_STRATEGIES, "ingest_batches": list(INGEST_BATCHES)},
    }
    worlds = []
    for i in range(n_orgs):
        ds = synthetic(items=items, interactions=interactions, users=users, seed=opts.seed + 100 + i)
        org = stack.create_org(f"soak {i}")
        log(f"soak: org {i}: COPY {ds.n_items:,} items, {ds.n_events:,} events")
        asyncio.run(copy_dataset(stack.database_url or "", org.org_id, ds))
        worlds.append((org, ds))

    log("soak: starting api and worker (default training settings)")
    stack.start_api("soak-api")
    stack.start_worker("soak-worker")
    stack.wait_http("soak-api")
    stack.wait_worker("soak-worker")
    for name in ("soak-api", "soak-worker"):
        sampler.watch(name, stack.children[name].pid)
    port = stack.children["soak-api"].port or 0
    apis = [Api(port, org) for org, _ in worlds]
    t0: float | None = None
    t1: float | None = None
    try:
        # Every org's train is asked for at once: the worker trains them side by side, as it
        # would for tenants whose data arrived together.
        log(f"soak: training the {n_orgs} orgs")
        asked = [ask_train(api) for api in apis]
        for api, ask in zip(apis, asked):
            train = wait_trained(stack, api, ask)
            wait_serving(stack, api, train["version"])
        for api in apis:
            wait_quiet(stack, api)
        templates: list[Template] = []
        body_events: dict[str, int] = {}
        n_sample = max(10, opts.sample // n_orgs)
        recommend_weight = RECOMMEND_SHARE / (n_orgs * len(SOAK_STRATEGIES))
        ingest_weight = (1 - RECOMMEND_SHARE) / (n_orgs * len(INGEST_BATCHES))
        for i, (api, (org, ds)) in enumerate(zip(apis, worlds)):
            samples = draw_samples(ds, n_sample, opts.seed + i)
            api.ingest_events(recent_sessions(ds, samples.users))
            for strategy in SOAK_STRATEGIES:
                needs = {"personalized": "user", "session_based": "user", "similar": "item",
                         "frequently-bought-together": "item"}.get(strategy)
                variant = Variant(strategy, strategy, needs, False, False)
                templates.append(Template(f"org{i}:recommend:{strategy}", RECOMMEND_PATH,
                                          {"X-API-KEY": org.publishable_key},
                                          recommend_bodies(ds, samples, variant), recommend_weight))
            pool = event_pool(ds, size=max(200, n_sample * 10), seed=opts.seed + 50 + i)
            for batch in INGEST_BATCHES:
                tag = f"org{i}:ingest:{batch}"
                body_events[tag] = batch
                templates.append(Template(tag, "/v1/ingest/events/ingest", {"X-API-KEY": org.publishable_key},
                                          batch_bodies(pool, batch, max_bodies=500), ingest_weight))
        for org, _ in worlds:
            drain(stack, org.org_id)
        before = {org.org_id: asyncio.run(count_events(stack.database_url or "", org.org_id)) for org, _ in worlds}
        versions_before = {org.org_id: api.status()["model"]["version"] for api, (org, _) in zip(apis, worlds)}

        log(f"soak: {opts.soak_s:.0f} s of mixed traffic at {opts.soak_rate:.0f} requests/s")
        t0 = sampler.now()
        result = loadgen.run(
            "soak", port=port, templates=templates, concurrency=opts.soak_concurrency, duration_s=opts.soak_s,
            warmup_s=0.0, rate=opts.soak_rate, modes=MODES, server_latency=True, seed=opts.seed,
        )
        t1 = sampler.now()
        log("soak: draining the queue, then counting stored events")
        drain_started = time.monotonic()
        for org, _ in worlds:
            drain(stack, org.org_id)
        drain_s = time.monotonic() - drain_started
        after = {org.org_id: asyncio.run(count_events(stack.database_url or "", org.org_id)) for org, _ in worlds}
        versions_after = {org.org_id: api.status()["model"]["version"] for api, (org, _) in zip(apis, worlds)}
    finally:
        for api in apis:
            api.close()
        for name in ("soak-api", "soak-worker"):
            sampler.forget(name)
        rss = {name: _series(sampler, name, t0=t0, t1=t1)
               for name in ("soak-api", "soak-worker")}
        stack.stop("soak-api", "soak-worker")

    tags = [t.tag for t in templates]
    is_ingest = np.array([":ingest:" in tag for tag in tags])[result.tag]
    ok = (result.status >= 200) & (result.status < 300)
    accepted = int(sum(body_events[tags[k]] for k in result.tag[is_ingest & (result.status == 202)]))
    stored = int(sum(after[o] - before[o] for o in after))
    non_429 = (~ok) & (result.status != 429)
    out["requests"] = len(result.t)
    out["achieved_rps"] = len(result.t) / opts.soak_s if opts.soak_s else 0.0
    out["statuses"] = {str(int(c)): int(n) for c, n in zip(*np.unique(result.status, return_counts=True))}
    out["errors_non_429"] = int(non_429.sum())
    out["error_rate_non_429"] = float(non_429.mean()) if len(result.t) else 0.0
    out["rate_limited"] = int((result.status == 429).sum())
    out["latency_ms"] = {
        "all": percentiles(result.lat * 1000),
        "recommend": percentiles(result.lat[~is_ingest] * 1000),
        "ingest": percentiles(result.lat[is_ingest] * 1000),
        "recommend_server": percentiles(result.server_ms[~is_ingest & ok & np.isfinite(result.server_ms)]),
    }
    if (~is_ingest & ok).any():
        modes = result.mode[~is_ingest & ok]
        out["fallback_share"] = float((modes == MODES.index("fallback")).mean())
    out["over_time"] = _buckets(result, is_ingest, ok, opts.soak_s)
    out["events"] = {"accepted": accepted, "stored": stored, "equal": accepted == stored, "drain_s": drain_s}
    out["retrains_during_soak"] = sum(versions_before[o] != versions_after[o] for o in versions_after)
    warmup_s = min(120.0, 0.2 * opts.soak_s)
    out["rss"] = {}
    for name, series in rss.items():
        key = name.removeprefix("soak-")
        t = np.asarray(series["t"])
        out["rss"][key] = {
            "warmup_s": warmup_s,
            "trend": rss_trend(t, np.asarray(series["rss_mb"]), warmup_s=warmup_s),
            "trend_with_children": rss_trend(t, np.asarray(series["rss_tree_mb"]), warmup_s=warmup_s),
            "series": _thin(series, 400),
        }
    out["loadgen_cpu_util"] = result.client_cpu_s / result.wall_s if result.wall_s else 0.0
    return out


def _series(sampler: ResourceSampler, name: str, *, t0: float | None, t1: float | None) -> dict[str, list[float]]:
    series = sampler.series.get(name)
    if series is None or t0 is None:
        return {"t": [], "rss_mb": [], "rss_tree_mb": []}
    end = t1 if t1 is not None else float("inf")
    rows = [(t - t0, r / MB, rt / MB) for t, r, rt in zip(series.t, series.rss, series.rss_tree) if t0 <= t <= end]
    return {"t": [r[0] for r in rows], "rss_mb": [r[1] for r in rows], "rss_tree_mb": [r[2] for r in rows]}


def _thin(series: dict[str, list[float]], points: int) -> dict[str, list[float]]:
    n = len(series["t"])
    step = max(1, int(np.ceil(n / points)))
    return {k: [round(v, 2) for v in values[::step]] for k, values in series.items()}


def _buckets(result: Any, is_ingest: np.ndarray, ok: np.ndarray, duration_s: float) -> dict[str, list[float]]:
    width = max(1.0, duration_s / 60.0)
    edges = np.arange(0.0, duration_s + width, width)
    out: dict[str, list[float]] = {"t": [], "rps": [], "p99_ms": [], "p99_recommend_ms": [], "p99_ingest_ms": [],
                                   "errors": []}
    for lo, hi in itertools.pairwise(edges):
        inside = (result.t >= lo) & (result.t < hi)
        if not inside.any():
            continue
        lat = result.lat * 1000
        out["t"].append(float((lo + hi) / 2))
        out["rps"].append(float(inside.sum() / (hi - lo)))
        out["p99_ms"].append(float(np.percentile(lat[inside], 99)))
        rec = inside & ~is_ingest
        ing = inside & is_ingest
        out["p99_recommend_ms"].append(float(np.percentile(lat[rec], 99)) if rec.any() else float("nan"))
        out["p99_ingest_ms"].append(float(np.percentile(lat[ing], 99)) if ing.any() else float("nan"))
        out["errors"].append(float((inside & ~ok & (result.status != 429)).sum()))
    return out
