"""The dashboard's API calls, timed server-side at 100k items and 1M events (issue 18's goal: every page
under 200 ms server-side).

    python -m benchmarks.dashboard [--items 100000] [--interactions 1000000] [--users 50000] [--repeat 15]

What it does: embedded PostgreSQL and Redis in a temporary directory, migrations, one org with the
synthetic shop of `lehnz bench` (same generator, same seed) COPYed into items and events, 50k upserted
users, 100k served recommendations over 30 days with clicks and purchases attributed to some, one
training run (the real worker, burst mode), then every call each dashboard page makes, in the order
the page makes them, each repeated `--repeat` times after one warm-up, by two paths:

- in-process: the real app through httpx over ASGI (the server's own time, no network);
- over HTTP: a `lehnz api` process (uvicorn, as deployed) on 127.0.0.1, with a keep-alive client.

A page's time is the sum of its calls' medians (the page sends some of them in parallel, so this is an
upper bound); the goal is judged on the in-process figures. Then what the counts and the search index
cost the writers (benchmarks/dashboard_writes.py; `--no-writes` skips it).

The figures go to stdout and, with --out, to a JSON file; docs/benchmarks.md ("Dashboard") quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

GOAL_MS = 200.0


def _pages(
    user: str, item: str, item_query: str, rare_query: str, deep_after: str
) -> dict[str, list[tuple[str, str, Any]]]:
    """Each page's API calls: (method, path, JSON body or query)."""
    return {
        "overview": [("GET", "/v1/models/status", None), ("GET", "/v1/overview", None)],
        "developer access": [("GET", "/v1/keys", None)],
        "playground (open)": [
            ("GET", "/v1/strategies", None),
            ("GET", "/v1/users", {"limit": 6}),
            ("GET", "/v1/items", {"limit": 6, "status": "active"}),
        ],
        "playground (run personalized)": [
            ("POST", "/v1/recommend", {"strategy": "personalized", "user_id": user, "limit": 10})
        ],
        "playground (item search as you type)": [
            ("GET", "/v1/items", {"q": item_query, "limit": 8, "status": "active"})
        ],
        "playground (user search as you type)": [("GET", "/v1/users", {"q": user[:-1], "limit": 8})],
        "catalog (first page)": [("GET", "/v1/items", {"limit": 20})],
        "catalog (search, a word no item has)": [("GET", "/v1/items", {"q": rare_query, "limit": 20})],
        "catalog (search, a word a third of the items have)": [
            ("GET", "/v1/items", {"q": "noun1", "limit": 20})
        ],
        "catalog (a page near the end)": [("GET", "/v1/items", {"limit": 20, "after": deep_after})],
        "item": [
            ("GET", f"/v1/items/{item}", None),
            ("POST", "/v1/recommend", {"strategy": "similar", "context_item_id": item, "limit": 6}),
            (
                "POST",
                "/v1/recommend",
                {"strategy": "frequently-bought-together", "context_item_id": item, "limit": 6},
            ),
        ],
        "users (first page)": [("GET", "/v1/users", {"limit": 20})],
        "user": [
            ("GET", f"/v1/users/{user}", {"limit": 50}),
            ("POST", "/v1/recommend", {"strategy": "personalized", "user_id": user, "limit": 6}),
        ],
        "analytics (30 days)": [("GET", "/v1/analytics/recommendations", None)],
        "settings": [("GET", "/v1/org", None)],
    }


async def _seed(database_url: str, org_id: str, ds: Any, *, served: int) -> dict[str, float]:
    import asyncpg
    import numpy as np

    from benchmarks.speed.loading import copy_dataset, plain_dsn

    timings = await copy_dataset(database_url, org_id, ds)
    org = uuid.UUID(org_id)
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=30)
    try:
        now = datetime.now(UTC)
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "users",
            columns=["org_id", "user_id", "status", "attributes", "created_at", "updated_at", "received_at"],
            records=[
                (org, u, "active", '{"plan": "basic"}', now - timedelta(days=200), now, now)
                for u in ds.user_ids
            ],
        )
        rng = np.random.default_rng(7)
        strategies = ["personalized", "similar", "trending", "frequently-bought-together", "popular"]
        rows, attributed = [], []
        for n in range(served):
            rid = uuid.uuid4()
            at = now - timedelta(seconds=float(rng.uniform(0, 30 * 86400)))
            user = ds.user_ids[int(rng.integers(len(ds.user_ids)))]
            items = [ds.item_ids[int(i)] for i in rng.integers(len(ds.item_ids), size=10)]
            rows.append(
                (org, rid, strategies[n % len(strategies)], "behavioral", user, None, items, None, at)
            )
            if n % 10 == 0:  # a click on one in ten, a purchase on one in fifty
                name, family = ("purchase", "conversion") if n % 50 == 0 else ("click", "engagement")
                attributed.append(
                    (
                        org,
                        uuid.uuid4(),
                        user,
                        family,
                        name,
                        items[0],
                        None,
                        str(rid),
                        '{"price": 20, "quantity": 1}',
                        at + timedelta(minutes=1),
                        at,
                    )
                )
        await conn.copy_records_to_table(
            "served_recommendations",
            records=rows,
            columns=[
                "org_id",
                "recommendation_id",
                "strategy",
                "mode",
                "user_id",
                "context_item_id",
                "item_ids",
                "model_version",
                "served_at",
            ],
        )
        await conn.copy_records_to_table(
            "events",
            records=attributed,
            columns=[
                "org_id",
                "event_id",
                "user_id",
                "event_family",
                "event_name",
                "item_id",
                "previous_user_id",
                "recommendation_id",
                "context",
                "occurred_at",
                "received_at",
            ],
        )
        # As autovacuum would have by now: statistics and the visibility map (index-only scans).
        for table in ("items", "users", "events", "served_recommendations"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        timings["users_served_s"] = time.perf_counter() - started
    finally:
        await conn.close()
    return timings


async def run(args: argparse.Namespace, urls: Any, data_dir: Path) -> dict[str, Any]:
    import httpx

    from app.main import create_app
    from app.queue import Queue, create_redis
    from app.settings import Settings
    from app.storage import accounts, orgs
    from app.storage.db import create_engine, create_session_factory
    from benchmarks.speed.server import Stack
    from benchmarks.speed.synthetic import synthetic
    from workers.main import run as run_worker

    settings = Settings(
        database_url=urls.database_url,
        redis_url=urls.redis_url,
        data_dir=data_dir,
        access_log=False,
        rate_limit="100000000/minute",
        auth_rate_limit="100000/minute",
    )
    engine = create_engine(urls.database_url, pool_size=2)
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        org = await orgs.create_org(session, name="Bench", slug="bench", domain="commerce")
        await orgs.add_key_pair(session, org.id)
        from app import security

        await accounts.create_account(
            session,
            email="bench@example.com",
            password_hash=security.hash_password("bench passphrase 1"),
            org_id=org.id,
        )
    await engine.dispose()
    org_id = str(org.id)

    log = print if not args.quiet else (lambda *a, **k: None)
    log(f"generating {args.items:,} items, {args.users:,} users, {args.interactions:,} interactions ...")
    ds = synthetic(items=args.items, interactions=args.interactions, users=args.users, seed=7)
    seeded = await _seed(urls.database_url, org_id, ds, served=args.served)
    log(f"loaded in {seeded['items_s'] + seeded['events_s'] + seeded['users_served_s']:.0f} s; training ...")
    redis = create_redis(urls.redis_url)
    await Queue(redis).enqueue_train(org_id, reason="bench", asked=True)
    await redis.aclose()
    started = time.perf_counter()
    await run_worker(settings, burst=True)
    train_s = time.perf_counter() - started
    log(f"trained in {train_s:.0f} s; measuring ...")

    user = ds.user_ids[int(ds.ev_user[-1])]
    item = ds.item_ids[int(ds.ev_item[-1])]
    title_word = str(ds.item_attributes[0].get("title", "adj1 noun1")).split()[0]
    pages = _pages(user, item, title_word, "no-such-word", sorted(ds.item_ids)[-25])
    load_before = os.getloadavg()

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.lehnz.models.get(org_id)  # the model loaded, as on a serving api
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            log("in-process (httpx over ASGI):")
            in_process = await _measure(http, pages, repeat=args.repeat, log=log)

    log("over HTTP (a `lehnz api` process on 127.0.0.1):")
    (data_dir / "logs").mkdir(exist_ok=True)
    stack = Stack(data_dir, database_url=urls.database_url, redis_url=urls.redis_url)  # migrated already
    try:
        api = stack.start_api()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=60) as http:
            await _wait_serving(http, stack.check_alive)
            over_http = await _measure(http, pages, repeat=args.repeat, log=log)
    finally:
        stack.close()
    load_after = os.getloadavg()

    writes = None
    if args.writes:
        from benchmarks import dashboard_writes

        engine = create_engine(urls.database_url, pool_size=args.writers + 2)
        try:
            writes = await dashboard_writes.run(engine, writers=args.writers, hold_s=args.hold_s, log=log)
        finally:
            await engine.dispose()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "command": "python -m benchmarks.dashboard " + " ".join(sys.argv[1:]),
        "data": {
            "items": args.items,
            "users": args.users,
            "interactions": args.interactions,
            "served": args.served,
            "load_s": seeded,
            "train_s": round(train_s, 1),
        },
        "load_average_1m": {"before": round(load_before[0], 1), "after": round(load_after[0], 1)},
        "goal_ms": GOAL_MS,
        "pages": in_process,
        "pages_over_http": over_http,
        "writes": writes,
    }


async def _measure(
    http: Any, pages: dict[str, list[tuple[str, str, Any]]], *, repeat: int, log: Any
) -> dict[str, Any]:
    """Each page's calls, signed in with the dashboard's cookie session, `repeat` times after a warm-up."""
    login = await http.post(
        "/auth/login", json={"email": "bench@example.com", "password": "bench passphrase 1", "session": "cookie"}
    )
    csrf = login.json()["data"]["csrf_token"]
    results: dict[str, Any] = {}
    for page, calls in pages.items():
        measured: list[dict[str, Any]] = []
        for method, path, payload in calls:
            samples = []
            for attempt in range(repeat + 1):
                t0 = time.perf_counter()
                if method == "GET":
                    response = await http.get(path, params=payload)
                else:
                    response = await http.post(path, json=payload, headers={"X-CSRF-Token": csrf})
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
                if attempt:  # the first one warms caches up
                    samples.append(elapsed)
            samples.sort()
            measured.append(
                {
                    "call": f"{method} {path}" + (f" {json.dumps(payload)}" if payload else ""),
                    "p50_ms": round(statistics.median(samples), 2),
                    "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2),
                    "max_ms": round(samples[-1], 2),
                }
            )
        total = round(sum(c["p50_ms"] for c in measured), 2)
        results[page] = {"calls": measured, "page_p50_ms": total, "met": total <= GOAL_MS}
        log(f"  {page:55s} {total:8.1f} ms  " + ("ok" if total <= GOAL_MS else "OVER"))
    return results


async def _wait_serving(http: Any, check_alive: Any, timeout_s: float = 600) -> None:
    """Until the api process answers and has loaded the org's model (its start-up preload)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive()
        try:
            ready = await http.get("/readyz")
            if ready.status_code == 200 and ready.json()["data"]["models"]["loaded_orgs"] >= 1:
                return
        except httpx.TransportError:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the api process did not load the org's model in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--served", type=int, default=100_000, help="served recommendations over 30 days")
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per call (after one warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--no-writes", dest="writes", action="store_false",
                        help="skip measuring what the counts and the search index cost the writers")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers of one org (writes)")
    parser.add_argument("--hold-s", type=float, default=3.0,
                        help="how long another transaction holds a count row (writes)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    from app.embedded import EmbeddedServers
    from app.storage.migrate import upgrade_head

    data_dir = Path(tempfile.mkdtemp(prefix="lehnz-dashboard-bench-"))
    servers = EmbeddedServers(data_dir / "servers", postgres=True, redis_server=True)
    try:
        urls = servers.open()
        assert urls.database_url is not None  # asked for postgres=True
        upgrade_head(urls.database_url)
        results = asyncio.run(run(args, urls, data_dir))
    finally:
        servers.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    missed = [page for page, r in results["pages"].items() if not r["met"]]
    if missed:
        print(f"over {GOAL_MS:.0f} ms: {', '.join(missed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
