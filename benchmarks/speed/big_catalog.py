"""`lehnz bench --big-catalog`: serving a million-item catalog (issue 17's goals for big catalogs).

A synthetic shop of 1M items and 10M events (UUID user ids, bulk_events.py's preload) is trained
through the api and the worker (POST /v1/models/train), then every strategy in the registry is
asked for at concurrency 1 through the real api over HTTP (the speed run's load generator),
unfiltered, and the four of issue 3 with filters too. Measured: each strategy's server latency
(the response's latency_ms, p50/p99), the api's RSS at start, with the org loaded and after the
requests, the time from the first train finishing to the api serving it, and the same for a
second train while the api serves the first (a new version swapped in behind live requests).
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

START, END = "<!-- big-catalog:start -->", "<!-- big-catalog:end -->"
LATENCY_GOAL_MS = 10.0
API_RSS_GOAL_MB = 1.5 * 1024
SWAP_GOAL_S = 30.0


@dataclass
class CatalogOptions:
    items: int = 1_000_000
    interactions: int = 10_000_000
    users: int = 500_000
    duration_s: float = 10.0
    warmup_s: float = 2.0
    sample: int = 2_000
    seed: int = 7
    data_dir: Path | None = None
    keep: bool = False
    out: Path = Path("docs/benchmarks/big_catalog.json")
    docs: Path = Path("docs/benchmarks.md")
    write_docs: bool = False
    command: str = "lehnz bench --big-catalog"


def run_big_catalog(opts: CatalogOptions, log: Callable[[str], None]) -> dict[str, Any]:
    from benchmarks.speed.bulk_events import World, bulk_load
    from benchmarks.speed.loadgen import LoadGen, Template
    from benchmarks.speed.run import (
        MB,
        MODES,
        RECOMMEND_PATH,
        Api,
        Variant,
        code_version,
        drain,
        draw_samples,
        machine_info,
        recent_sessions,
        recommend_bodies,
        rss_mb,
        train_and_wait,
        wait_quiet,
        wait_serving,
    )
    from benchmarks.speed.server import QUIET_TRAINING, ResourceSampler, Stack
    from benchmarks.speed.synthetic import synthetic

    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="lehnz-big-catalog-"))
    meta = {"command": opts.command, "started_at": _now(), "machine": machine_info(), "code": code_version(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                        if k not in ("command", "data_dir", "out", "docs", "write_docs", "keep")}}
    stack = Stack(data_dir)
    sampler = ResourceSampler(interval_s=0.5)
    loadgen: LoadGen | None = None
    out: dict[str, Any] = {}
    try:
        log(f"embedded servers under {data_dir}")
        stack.open()
        sampler.start()
        loadgen = LoadGen(data_dir / "loadgen")
        log(f"generating {opts.items:,} items, {opts.users:,} users, {opts.interactions:,} events")
        ds = synthetic(items=opts.items, interactions=opts.interactions, users=opts.users, seed=opts.seed)
        world = World.of(ds)
        # Requests and real-time events name the ids the load wrote.
        ds.user_ids = [world.user_id(u) for u in range(ds.n_users)]
        ds.item_ids = [world.item_id(i) for i in range(ds.n_items)]
        org = stack.create_org("big-catalog")
        log("bulk load (binary COPY, every index rebuilt: the worker ingests during the run)")
        out["preload"] = asyncio.run(bulk_load(stack.database_url or "", org.org_id, world, log=log))
        del world
        gc.collect()

        stack.start_measured(sampler, extra_env=QUIET_TRAINING)
        api = Api(stack.children["api"].port or 0, org)
        try:
            memory: dict[str, Any] = {"api_rss_mb_started": rss_mb(sampler, "api")}
            log("first train (POST /v1/models/train)")
            train_started = sampler.now()
            first = train_and_wait(stack, api, timeout_s=4 * 3600.0)
            first["peak_rss_mb_worker_with_training_child"] = sampler.peak_tree_rss("worker", since=train_started) / MB
            first["serving_after_s"] = wait_serving(stack, api, first["version"], timeout_s=1800.0)
            first["measured_version"] = wait_quiet(stack, api, timeout_s=4 * 3600.0)
            if first["measured_version"] != first["version"]:
                log(f"the worker's start-up train had run first, and the asked one after it; "
                    f"measuring its version {first['measured_version']}")
            time.sleep(1.0)
            memory["api_rss_mb_model_loaded"] = rss_mb(sampler, "api")
            log(f"trained in {first['duration_s']:.0f} s, served {first['serving_after_s']:.1f} s after; "
                f"api RSS {memory['api_rss_mb_model_loaded']:.0f} MB")

            samples = draw_samples(ds, opts.sample, opts.seed)
            sessions = recent_sessions(ds, samples.users)
            api.ingest_events(sessions)
            drain(stack, org.org_id)

            from app.recommend.registry import ITEM, ITEM_OR_CATEGORY, REGISTRY, USER

            needs = {USER: "user", ITEM: "item", ITEM_OR_CATEGORY: "item", None: None}
            variants = [Variant(name, name, needs[s.requires], False, False) for name, s in REGISTRY.items()]
            variants += [Variant(f"{name}+filters", name, needs[REGISTRY[name].requires], True, True)
                         for name in ("personalized", "similar", "session_based", "frequently-bought-together")]
            port = stack.children["api"].port or 0
            first_filtered = next(v for v in variants if v.filtered)
            log(f"first filtered request ({first_filtered.name}), while 'popular' is asked alongside")
            out["first_filtered_request"] = first_filtered_request(
                api, orjson.loads(recommend_bodies(ds, samples, first_filtered)[0]))
            phases: dict[str, Any] = {}
            for variant in variants:
                log(f"recommend, concurrency 1: {variant.name}")
                result = loadgen.run(
                    variant.name, port=port, concurrency=1, duration_s=opts.duration_s, warmup_s=opts.warmup_s,
                    modes=MODES, server_latency=True,
                    templates=[Template(variant.name, RECOMMEND_PATH, {"X-API-KEY": org.publishable_key},
                                        recommend_bodies(ds, samples, variant))],
                )
                phases[variant.name] = result.summary()
            out["recommend"] = {"concurrency": 1, "variants": phases}
            memory["api_rss_mb_after_recommend"] = rss_mb(sampler, "api")

            wait_quiet(stack, api, timeout_s=4 * 3600.0)
            log("second train while the api serves the first; time until the api serves it")
            second = train_and_wait(stack, api, timeout_s=4 * 3600.0)
            second["serving_after_s"] = wait_serving(stack, api, second["version"], timeout_s=1800.0)
            memory["api_rss_mb_second_model"] = rss_mb(sampler, "api")
            memory["api_rss_mb_peak"] = max(sampler.series["api"].rss, default=0) / MB
            out["trains"] = [first, second]
            out["memory"] = memory
        finally:
            api.close()
    finally:
        for step in (sampler.stop, loadgen.close if loadgen is not None else None, stack.close):
            if step is not None:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - go on cleaning up
                    log(f"cleanup step failed: {exc!r}")
        if not opts.keep and opts.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    meta["finished_at"] = _now()
    report: dict[str, Any] = {"schema": 1, "big_catalog": {"meta": meta, **out, "goals": goals(out)}}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.speed.report import _clean

    opts.out.write_text(json.dumps(_clean(report), indent=1) + "\n")
    if opts.write_docs:
        write_docs(opts.docs, report["big_catalog"])
    return report


def first_filtered_request(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The first request filtering on an attribute builds that attribute's column from every
    item; meanwhile other requests must still be answered (the build runs off the event loop).
    Times that request, and `popular` requests sent one after another while it runs."""
    result: dict[str, Any] = {}

    def filtered() -> None:
        started = time.perf_counter()
        data = api.recommend(body)
        result.update(client_ms=(time.perf_counter() - started) * 1000, server_ms=data["latency_ms"])

    thread = threading.Thread(target=filtered, name="first-filtered")
    thread.start()
    alongside: list[float] = []
    while thread.is_alive():
        started = time.perf_counter()
        api.recommend({"strategy": "popular", "limit": 20})
        alongside.append((time.perf_counter() - started) * 1000)
    thread.join()
    result["filters"] = sorted(body.get("filters") or {})
    result["popular_alongside"] = {"requests": len(alongside), "max_client_ms": max(alongside, default=None),
                                   "p50_client_ms": float(np.percentile(alongside, 50)) if alongside else None}
    return result


def goals(out: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks.speed.report import _goal

    rows: list[dict[str, Any]] = []
    items = (out.get("trains") or [{}])[0].get("items")
    context = f"{items:,} items, concurrency 1" if items else "concurrency 1"
    for name, phase in (out.get("recommend") or {}).get("variants", {}).items():
        p99 = (phase.get("server_ms") or {}).get("p99")
        rows.append(_goal(17, f"{name}: server p99 <= 10 ms", p99, LATENCY_GOAL_MS, higher_is_better=False,
                          unit="ms", context=context))
    memory = out.get("memory") or {}
    rows.append(_goal(17, "api RSS with the org loaded <= 1.5 GB", memory.get("api_rss_mb_after_recommend"),
                      API_RSS_GOAL_MB, higher_is_better=False, unit="MB", context="after every strategy ran"))
    for k, train in enumerate(out.get("trains") or []):
        rows.append(_goal(17, "new version served within 30 s of the train finishing", train.get("serving_after_s"),
                          SWAP_GOAL_S, higher_is_better=False, unit="s",
                          context="first train (cold)" if k == 0 else "second train (swap under load)"))
    return rows


def markdown(result: dict[str, Any]) -> str:
    from benchmarks.speed.report import _f, _goal_rows, _machine

    meta = result["meta"]
    options = meta["options"]
    lines = [
        (f"Measured {meta.get('finished_at') or meta['started_at']} with `{meta['command']}` on {_machine(meta)}. "
        f"Synthetic shop: {options['items']:,} items, {options['users']:,} UUID users, "
        f"{options['interactions']:,} events; one `lehnz api` process and one `lehnz worker`."),
        "",
        "| strategy | server p50 ms | server p99 ms | client p99 ms | modes |",
        "|---|---|---|---|---|",
    ]
    for name, phase in (result.get("recommend") or {}).get("variants", {}).items():
        server = phase.get("server_ms") or {}
        modes = ", ".join(f"{m} {share:.0%}" for m, share in (phase.get("modes") or {}).items())
        lines.append(f"| {name} | {_f(server.get('p50'), 2)} | {_f(server.get('p99'), 2)} | "
                     f"{_f(phase['client_ms']['p99'], 2)} | {modes or '-'} |")
    first = result.get("first_filtered_request")
    if first:
        alongside = first["popular_alongside"]
        lines += ["", (f"First filtered request (filters {', '.join(first['filters'])}; it builds the columns "
                       f"not built at load): {_f(first['client_ms'], 0)} ms. Meanwhile {alongside['requests']} "
                       f"`popular` requests were answered, p50 {_f(alongside['p50_client_ms'], 1)} ms, "
                       f"slowest {_f(alongside['max_client_ms'], 1)} ms (client).")]
    memory = result.get("memory") or {}
    trains = result.get("trains") or []
    lines += ["", (f"api RSS: {_f(memory.get('api_rss_mb_started'), 0)} MB at start, "
                  f"{_f(memory.get('api_rss_mb_model_loaded'), 0)} MB with the org loaded, "
                  f"{_f(memory.get('api_rss_mb_after_recommend'), 0)} MB after every strategy ran, "
                  f"{_f(memory.get('api_rss_mb_second_model'), 0)} MB after the second version was swapped in "
                  f"(peak {_f(memory.get('api_rss_mb_peak'), 0)} MB).")]
    for k, train in enumerate(trains):
        lines.append(f"Train {k + 1}: {_f(train['duration_s'], 0)} s ({train['interactions']:,} events, "
                     f"{train['users']:,} users, {train['items']:,} items); served "
                     f"{_f(train['serving_after_s'], 1)} s after it finished.")
    lines += ["", "Goals (issue 17):", ""] + _goal_rows(result.get("goals") or [])
    return "\n".join(lines)


def write_docs(docs: Path, result: dict[str, Any]) -> None:
    text = docs.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{docs} has no {START} ... {END} region")
    docs.write_text(text[: start + len(START)] + "\n" + markdown(result) + "\n" + text[end:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

