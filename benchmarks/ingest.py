"""Ingest benchmark (issue 2): how fast one api process accepts events and one worker persists them.

For each request shape (1 event, batches of 100 and of 1,000):
1. the floor: the same bodies against a bare FastAPI endpoint that only parses the JSON and
   answers 202 (floors.py), with the same load generator and concurrency;
2. the api: POST /v1/ingest/events/ingest with the worker stopped (SIGSTOP), so the api has the
   machine's second core to itself and the queue fills: accepted events/s, requests/s, and the
   client-side p50/p99 of the 202 path;
3. the worker: continued (SIGCONT) with the api idle; persisted events/s is the queue's events
   over the time until this org's pending set is empty, and every accepted event is checked to
   be stored (the workers' persisted counter).
Then the floor of the worker: raw asyncpg COPY of the same event rows into the events table.

`lehnz bench` runs this as one of its parts; `python -m benchmarks.ingest` runs it alone on
fresh embedded servers and prints the table (add `--out FILE.json` to keep the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

BATCH_SIZES = (1, 100, 1000)
EVENTS_PATH = "/v1/ingest/events/ingest"


def event_pool(ds: Any, *, size: int, seed: int = 11) -> list[dict[str, Any]]:
    """`size` wire-format events drawn from the dataset, re-timed to the last hour (fresh traffic)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, ds.n_events, size)
    now = time.time()
    stamps = now - 3600.0 * rng.random(size)
    return [ds.wire_event(int(r), timestamp=float(t), session_offset=10**9) for r, t in zip(rows, stamps)]


def batch_bodies(pool: list[dict[str, Any]], batch: int, *, max_bodies: int = 4000) -> list[bytes]:
    """Distinct bodies of `batch` events each (a single event is sent as an object, not an array)."""
    if batch == 1:
        return [orjson.dumps(e) for e in pool[:max_bodies]]
    count = max(1, min(max_bodies, len(pool) // batch))
    return [orjson.dumps(pool[i * batch: (i + 1) * batch]) for i in range(count)]


def run_ingest(
    stack: Any,
    loadgen: Any,
    sampler: Any,
    *,
    pool: list[dict[str, Any]],
    api: str,
    floor: str,
    worker: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    drain_timeout_s: float = 900.0,
    log: Any = print,
    profiler: Any = None,
) -> dict[str, Any]:
    from benchmarks.speed.floors import INGEST_PATH, copy_floor
    from benchmarks.speed.loadgen import Template

    org = stack.create_org("bench ingest")
    headers = {"X-API-KEY": org.publishable_key}
    api_port = stack.children[api].port
    floor_port = stack.children[floor].port
    out: dict[str, Any] = {"concurrency": concurrency, "duration_s": duration_s, "batches": {}}
    for batch in BATCH_SIZES:
        bodies = batch_bodies(pool, batch)
        label = "single event" if batch == 1 else f"batch of {batch}"
        log(f"ingest: {label}: bare endpoint floor")
        floor_result = loadgen.run(
            f"ingest-floor-{batch}", port=floor_port, concurrency=concurrency, duration_s=duration_s,
            warmup_s=warmup_s, server_latency=False,
            templates=[Template("floor", INGEST_PATH, {}, bodies)],
        )
        floor_summary = floor_result.summary()

        log(f"ingest: {label}: api (worker stopped)")
        stack.suspend(worker)
        cpu_before = sampler.cpu_seconds(api)
        recording = (profiler.record(stack.children[api].pid, f"ingest-api-{batch}", duration_s + warmup_s)
                     if profiler is not None else contextlib.nullcontext())
        try:
            with recording:
                result = loadgen.run(
                    f"ingest-api-{batch}", port=api_port, concurrency=concurrency, duration_s=duration_s,
                    warmup_s=warmup_s, server_latency=False,
                    templates=[Template("ingest", EVENTS_PATH, headers, bodies)],
                )
        except BaseException:
            stack.resume(worker)
            raise
        api_cpu = sampler.cpu_seconds(api) - cpu_before
        summary = result.summary()
        accepted_all = int((result.status == 202).sum()) * batch
        persisted_before = stack.events_persisted()
        queued_jobs = stack.ingest_pending(org.org_id)

        log(f"ingest: {label}: worker drains {accepted_all:,} events in {queued_jobs:,} jobs")
        worker_cpu_before = sampler.cpu_seconds(worker)
        started = time.perf_counter()
        stack.resume(worker)
        worker_profile = (profiler.record(stack.children[worker].pid, f"ingest-worker-{batch}", 10.0)
                          if profiler is not None else contextlib.nullcontext())
        with worker_profile:
            deadline = started + drain_timeout_s
            while stack.ingest_pending(org.org_id) > 0 and time.perf_counter() < deadline:
                stack.check_alive()
                time.sleep(0.02)
            drain_s = time.perf_counter() - started
        worker_cpu = sampler.cpu_seconds(worker) - worker_cpu_before
        persisted = stack.events_persisted() - persisted_before
        window_ok = summary["ok"] * batch
        floor_events = floor_summary["ok"] * batch
        out["batches"][str(batch)] = {
            "events_per_request": batch,
            "accepted_events_per_s": window_ok / duration_s,
            "requests_per_s": summary["ok_rps"],
            "latency_ms": summary["client_ms"],
            "errors": summary["errors"],
            "statuses": summary["statuses"],
            "api_cpu_util": api_cpu / result.wall_s,
            "loadgen_cpu_util": result.client_cpu_s / result.wall_s,
            "floor_events_per_s": floor_events / duration_s,
            "floor_requests_per_s": floor_summary["ok_rps"],
            "floor_latency_ms": floor_summary["client_ms"],
            "accepted_vs_floor": (window_ok / floor_events) if floor_events else None,
            "queued_events": accepted_all,
            "queued_jobs": queued_jobs,
            "persisted_events": persisted,
            "drain_s": drain_s,
            "drained": stack.ingest_pending(org.org_id) == 0,
            "persisted_events_per_s": persisted / drain_s if drain_s else 0.0,
            "worker_cpu_util": worker_cpu / drain_s if drain_s else 0.0,
            "all_accepted_stored": persisted == accepted_all,
        }
    largest = out["batches"][str(BATCH_SIZES[-1])]
    rows = int(min(max(largest["queued_events"], 1000), 200_000))
    log(f"ingest: floor: raw asyncpg COPY of {rows:,} of the same event rows")
    copy_org = stack.create_org("bench copy floor")
    out["copy_floor"] = copy_floor(stack.database_url or "", copy_org.org_id, pool, rows=rows)
    out["persisted_vs_copy"] = largest["persisted_events_per_s"] / out["copy_floor"]["rows_per_s"]
    return out


def print_table(result: dict[str, Any], file: Any = sys.stdout) -> None:
    copy = result["copy_floor"]["rows_per_s"]
    print(f"{'request':>14} {'accepted ev/s':>14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'floor ev/s':>11} {'vs floor':>8} {'persisted ev/s':>15} {'vs COPY':>8}", file=file)
    for batch, row in result["batches"].items():
        print(
            f"{batch:>14} {row['accepted_events_per_s']:>14,.0f} {row['requests_per_s']:>8,.0f} "
            f"{row['latency_ms']['p50']:>7.2f} {row['latency_ms']['p99']:>7.2f} {row['floor_events_per_s']:>11,.0f} "
            f"{row['accepted_vs_floor'] or 0:>8.0%} {row['persisted_events_per_s']:>15,.0f} "
            f"{row['persisted_events_per_s'] / copy:>8.0%}",
            file=file,
        )
    print(f"raw COPY floor: {copy:,.0f} rows/s", file=file)


def main(argv: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase (not counted)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool", type=int, default=20_000, help="distinct events the bodies are made of")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", type=Path, help="py-spy flame graphs of the api and worker here")
    args = parser.parse_args(argv)

    from benchmarks.speed.loadgen import LoadGen
    from benchmarks.speed.server import Profiler, ResourceSampler, Stack
    from benchmarks.speed.synthetic import synthetic

    data_dir = Path(tempfile.mkdtemp(prefix="lehnz-ingest-bench-"))
    stack = Stack(data_dir)
    sampler = ResourceSampler()
    loadgen = None
    try:
        stack.open()
        stack.start_measured(sampler)
        sampler.start()
        loadgen = LoadGen(data_dir / "loadgen")
        ds = synthetic(items=10_000, interactions=max(args.pool, 1000), users=5_000)
        result = run_ingest(
            stack, loadgen, sampler, pool=event_pool(ds, size=args.pool), api="api", floor="floor", worker="worker",
            concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup,
            log=lambda m: print(m, file=sys.stderr), profiler=Profiler(args.profile) if args.profile else None,
        )
        print_table(result)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
    finally:
        # Every step runs even if one fails: no child process or embedded server is left behind.
        for step in (sampler.stop, loadgen.close if loadgen is not None else None, stack.close):
            if step is not None:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                    print(f"cleanup step failed: {exc!r}", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
