"""The speed run, phase by phase: preload -> train -> floors -> recommend -> ingest (-> soak).

Everything a ratio compares is measured in this one run, on this machine, with the same load
generator and concurrency. The order keeps phases apart: the training scheduler is quiet (only
the train we ask for runs), the floors run while the servers idle, the recommend phases run
before the ingest phases fill the queue.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.speed.loadgen import LoadGen, PhaseResult, Template
from benchmarks.speed.server import QUIET_TRAINING, OrgKeys, Profiler, ResourceSampler, Stack
from benchmarks.speed.synthetic import Dataset, load_dataset

MODES = ["behavioral", "semantic", "hybrid", "popularity", "fallback"]
RECOMMEND_PATH = "/v1/recommend"
MB = 1024 * 1024


@dataclass
class BenchOptions:
    dataset: str = "synthetic"
    items: int = 100_000
    interactions: int = 1_000_000
    users: int = 50_000
    duration_s: float = 10.0
    warmup_s: float = 2.0
    concurrency: int = 8
    ingest_pool: int = 20_000
    sample: int = 2_000  # distinct users / context items the request bodies cycle through
    numpy_queries: int = 5_000
    soak_s: float = 0.0
    soak_only: bool = False
    soak_rate: float = 100.0  # about a third of one api process's recommend capacity here
    soak_concurrency: int = 32
    soak_scale: float = 0.1  # each soak org is this fraction of the main dataset
    soak_orgs: int = 5  # tenants trained and served side by side in the soak
    profile_dir: Path | None = None  # py-spy flame graphs of the api/worker in chosen phases
    plots: bool = True  # the PNG plots (matplotlib, the `bench` extra)
    shared_data: Path = Path("../shared/data")
    data_dir: Path | None = None
    keep: bool = False
    seed: int = 7
    quick: bool = False
    out: Path = Path("docs/benchmarks/speed.json")
    docs: Path = Path("docs/benchmarks.md")
    write_docs: bool = False
    command: str = "lehnz bench"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick_sizes(cls, **overrides: Any) -> BenchOptions:
        # Every phase still runs and gets answers; each is short (28 phases of 0.4 s) and the soak has
        # 2 tenants, not 5 (each soak org is one more training process to start).
        base: dict[str, Any] = {
            "items": 300, "interactions": 3_000, "users": 100, "duration_s": 0.3, "warmup_s": 0.1,
            "concurrency": 4, "ingest_pool": 2_000, "sample": 100, "numpy_queries": 200, "soak_rate": 40.0,
            "soak_concurrency": 8, "soak_scale": 0.5, "soak_orgs": 2, "quick": True,
        }
        base.update(overrides)
        return cls(**base)


# --- the variants measured ------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str  # as reported, e.g. "similar+filters"
    strategy: str
    needs: str | None  # "user" | "item" | None
    filtered: bool
    issue3: bool  # one of the four strategies whose latency goal issue 3 states


VARIANTS = [
    Variant("personalized", "personalized", "user", False, True),
    Variant("personalized+filters", "personalized", "user", True, True),
    Variant("similar", "similar", "item", False, True),
    Variant("similar+filters", "similar", "item", True, True),
    Variant("session_based", "session_based", "user", False, True),
    Variant("session_based+filters", "session_based", "user", True, True),
    Variant("frequently-bought-together", "frequently-bought-together", "item", False, True),
    Variant("frequently-bought-together+filters", "frequently-bought-together", "item", True, True),
    Variant("popular", "popular", None, False, False),
    Variant("trending", "trending", None, False, False),
]


@dataclass
class Samples:
    """Who and what the request bodies are about: users with history, items people look at."""

    users: list[int]
    items: list[int]
    user_category: dict[int, str]
    price_cap: float | None


def draw_samples(ds: Dataset, n: int, seed: int) -> Samples:
    rng = np.random.default_rng(seed)
    active = np.unique(ds.ev_user)
    users = rng.choice(active, min(n, len(active)), replace=False).tolist()
    items = ds.ev_item[rng.integers(0, ds.n_events, n)].tolist()
    last_item: dict[int, int] = {}
    wanted = set(users)
    for u, i in zip(ds.ev_user.tolist(), ds.ev_item.tolist()):
        if u in wanted:
            last_item[u] = i
    user_category = {
        u: str(ds.item_attributes[i].get("category")) for u, i in last_item.items()
        if ds.item_attributes[i].get("category") is not None
    }
    prices = [a["price"] for a in ds.item_attributes if isinstance(a.get("price"), (int, float))]
    return Samples(users, items, user_category, float(np.percentile(prices, 75)) if prices else None)


def recommend_bodies(ds: Dataset, samples: Samples, variant: Variant) -> list[bytes]:
    bodies = []
    subjects: list[int] = samples.users if variant.needs == "user" else samples.items
    for subject in subjects if variant.needs else range(1):
        body: dict[str, Any] = {"strategy": variant.strategy, "limit": 20}
        category = None
        if variant.needs == "user":
            body["user_id"] = ds.user_ids[subject]
            category = samples.user_category.get(subject)
        elif variant.needs == "item":
            body["context_item_id"] = ds.item_ids[subject]
            category = ds.item_attributes[subject].get("category")
        if variant.filtered:
            filters: dict[str, Any] = {}
            if category is not None:
                filters["category"] = category
            if samples.price_cap is not None:
                filters["price"] = {"lte": samples.price_cap}
            body["filters"] = filters
        bodies.append(orjson.dumps(body))
    return bodies


# --- helpers ------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether server code had uncommitted changes (they were measured too)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "app", "workers", "migrations").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None, "uncommitted_server_files": changed}


class Api:
    """The harness's control-plane calls (train, status, one recommend), over plain httpx."""

    def __init__(self, port: int, org: OrgKeys) -> None:
        import httpx

        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self.org = org

    def close(self) -> None:
        self.http.close()

    def status(self) -> dict[str, Any]:
        response = self.http.get("/v1/models/status", headers={"X-API-KEY": self.org.secret_key})
        response.raise_for_status()
        return dict(response.json()["data"])

    def train(self) -> None:
        response = self.http.post("/v1/models/train", headers={"X-API-KEY": self.org.secret_key})
        response.raise_for_status()

    def recommend(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(RECOMMEND_PATH, json=body, headers={"X-API-KEY": self.org.publishable_key})
        response.raise_for_status()
        return dict(response.json()["data"])

    def ingest_events(self, events: list[dict[str, Any]]) -> None:
        for begin in range(0, len(events), 1000):
            response = self.http.post(
                "/v1/ingest/events/ingest", content=orjson.dumps(events[begin: begin + 1000]),
                headers={"X-API-KEY": self.org.publishable_key, "Content-Type": "application/json"},
            )
            response.raise_for_status()


def wait_until(check: Callable[[], Any], *, timeout_s: float, what: str, stack: Stack | None = None,
               interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if stack is not None:
            stack.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout_s:.0f} s")
        time.sleep(interval_s)


def train_and_wait(stack: Stack, api: Api, *, timeout_s: float = 7200.0) -> dict[str, Any]:
    """Ask for a train; wait for the new version; return it with the manifest's part timings."""
    return wait_trained(stack, api, ask_train(api), timeout_s=timeout_s)


@dataclass(frozen=True)
class AskedTrain:
    previous: str | None  # the version served before the train was asked for
    started: float  # time.monotonic() when it was asked for


def ask_train(api: Api) -> AskedTrain:
    previous = ((api.status().get("model")) or {}).get("version")
    started = time.monotonic()
    api.train()
    return AskedTrain(previous, started)


def wait_trained(stack: Stack, api: Api, asked: AskedTrain, *, timeout_s: float = 7200.0) -> dict[str, Any]:
    """Wait for the version a train asked for; return it with the manifest's part timings."""

    def trained() -> dict[str, Any] | None:
        status = api.status()
        model = status.get("model")
        if status.get("last_error") and not status.get("training"):
            raise RuntimeError(f"training failed: {status['last_error']}")
        if model and model["version"] != asked.previous and not status.get("training"):
            return status
        return None

    status = wait_until(trained, timeout_s=timeout_s, what="training", stack=stack, interval_s=0.5)
    wall = time.monotonic() - asked.started
    model = status["model"]
    manifest = json.loads((stack.model_dir / api.org.org_id / model["version"] / "manifest.json").read_text())
    parts = dict(manifest.get("extra", {}).get("timings_s", {}))
    return {
        "version": model["version"],
        "duration_s": model["duration_ms"] / 1000,
        "wall_s": wall,
        "parts_s": parts,
        "sum_parts_s": float(sum(parts.values())),
        # The family personalized is served by (the org's model search chose it): its part's name.
        "personal_model": manifest.get("params", {}).get("personal_model"),
        "items": model["items"],
        "users": model["users"],
        "interactions": model["interactions"],
    }


def wait_serving(stack: Stack, api: Api, version: str, *, timeout_s: float = 600.0) -> float:
    started = time.monotonic()
    wait_until(
        lambda: api.recommend({"strategy": "popular", "limit": 5}).get("model_version") == version,
        timeout_s=timeout_s, what="the api serving the new model", stack=stack, interval_s=0.2,
    )
    return time.monotonic() - started


def wait_quiet(stack: Stack, api: Api, *, timeout_s: float = 1800.0) -> str:
    """Until no train of the org runs or is owed and the api serves the latest version; returns
    it. A train the harness did not ask for (the worker's start-up train of an org that has data
    and no model, with the asked one owed behind it) must not run, nor swap its version in,
    while latencies are measured: at a million items that costs both cores for minutes."""

    def quiet() -> str | None:
        status = api.status()
        if status.get("training") or stack.train_owed(api.org.org_id):
            return None
        return ((status.get("model") or {}).get("version")) or None

    def quiet_twice() -> str | None:  # a train that just ended and its owed one that starts
        first = quiet()
        time.sleep(0.5)
        return first if first is not None and quiet() == first else None

    version = str(wait_until(quiet_twice, timeout_s=timeout_s, what="no train running or owed", stack=stack))
    wait_serving(stack, api, version, timeout_s=timeout_s)
    return version


def recent_sessions(ds: Dataset, users: list[int], *, per_user: int = 5) -> list[dict[str, Any]]:
    """The last few events of each user, replayed now as a fresh session (real-time state)."""
    wanted = set(users)
    last: dict[int, list[int]] = {}
    for row in np.flatnonzero(np.isin(ds.ev_user, list(wanted))).tolist():
        history = last.setdefault(int(ds.ev_user[row]), [])
        history.append(row)
        if len(history) > per_user:
            history.pop(0)
    now = time.time()
    events = []
    for rows in last.values():
        for k, row in enumerate(rows):
            events.append(ds.wire_event(row, timestamp=now - 60.0 * (len(rows) - k), session_offset=2 * 10**9))
    return events


def drain(stack: Stack, org_id: str, *, timeout_s: float = 900.0) -> None:
    wait_until(lambda: stack.ingest_pending(org_id) == 0, timeout_s=timeout_s, what="ingest queue drain",
               stack=stack, interval_s=0.05)


def rss_mb(sampler: ResourceSampler, name: str, *, tree: bool = False) -> float:
    reading = sampler.sample().get(name)
    if reading is None:
        return float("nan")
    return (reading[1] if tree else reading[0]) / MB


def phase_stats(result: PhaseResult, sampler: ResourceSampler, cpu: dict[str, float], names: list[str]) -> dict[str, Any]:
    out = result.summary()
    wall = result.wall_s
    out["cpu_util"] = {n: round((sampler.cpu_seconds(n) - cpu[n]) / wall, 3) for n in names}
    out["cpu_util"]["loadgen"] = round(result.client_cpu_s / wall, 3)
    out["loadgen_cpu_us_per_request"] = result.client_cpu_s / max(len(result.t), 1) * 1e6
    return out


def run_phase(
    loadgen: LoadGen, sampler: ResourceSampler, name: str, *, port: int, templates: list[Template],
    concurrency: int, opts: BenchOptions, watch: list[str], server_latency: bool = True,
    profile: tuple[Profiler, int] | None = None,
) -> tuple[dict[str, Any], PhaseResult]:
    cpu = {n: sampler.cpu_seconds(n) for n in watch}
    recording = profile[0].record(profile[1], name, opts.duration_s + opts.warmup_s) if profile else nullcontext()
    with recording:
        result = loadgen.run(
            name, port=port, templates=templates, concurrency=concurrency, duration_s=opts.duration_s,
            warmup_s=opts.warmup_s, modes=MODES, server_latency=server_latency,
        )
    return phase_stats(result, sampler, cpu, watch), result


# --- the speed run ------------------------------------------------------------------------------
def run_speed(
    opts: BenchOptions, stack: Stack, sampler: ResourceSampler, loadgen: LoadGen, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (results for the JSON, raw latencies for the plot)."""
    from benchmarks.ingest import event_pool, run_ingest
    from benchmarks.speed import floors

    out: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    log(f"dataset: {opts.dataset}")
    started = time.perf_counter()
    ds = load_dataset(opts.dataset, items=opts.items, interactions=opts.interactions, users=opts.users,
                      data_dir=opts.shared_data, seed=opts.seed)
    out["dataset"] = {**ds.describe(), "generated_s": time.perf_counter() - started}
    org = stack.create_org("bench")

    log(f"preload: COPY {ds.n_items:,} items and {ds.n_events:,} events into Postgres")
    import asyncio

    from benchmarks.speed.loading import copy_dataset

    out["preload"] = {"method": "asyncpg COPY into items and events (bypasses the api and worker)",
                      **asyncio.run(copy_dataset(stack.database_url or "", org.org_id, ds))}

    log("starting api, worker and the floor server")
    stack.start_measured(sampler, extra_env=QUIET_TRAINING)
    api = Api(stack.children["api"].port or 0, org)
    try:
        memory: dict[str, Any] = {"api_rss_mb_started": rss_mb(sampler, "api"),
                                  "worker_rss_mb_started": rss_mb(sampler, "worker")}

        log("training (POST /v1/models/train, then polling /v1/models/status)")
        train_started = sampler.now()
        train = train_and_wait(stack, api)
        train["peak_rss_mb_worker_with_training_child"] = sampler.peak_tree_rss("worker", since=train_started) / MB
        train["serving_after_s"] = wait_serving(stack, api, train["version"])
        train["measured_version"] = wait_quiet(stack, api)
        out["train"] = train
        log(f"trained {train['version']} in {train['duration_s']:.1f} s; the api serves it")
        time.sleep(1.0)
        memory["api_rss_mb_model_loaded"] = rss_mb(sampler, "api")
        memory["worker_rss_mb_model_trained"] = rss_mb(sampler, "worker")

        samples = draw_samples(ds, opts.sample, opts.seed)
        sessions = recent_sessions(ds, samples.users)
        log(f"real-time state: {len(sessions):,} recent events of {len(samples.users):,} users through the api")
        api.ingest_events(sessions)
        drain(stack, org.org_id)

        log("floors: numpy top-20 over the model's item factors; ALS fit alone on the same matrix")
        from app.model_store import ModelStore

        models = ModelStore(stack.model_dir).load_latest(org.org_id)
        assert models is not None
        rng = np.random.default_rng(opts.seed)
        queries = models.user_factors[rng.integers(0, len(models.user_factors), opts.numpy_queries)]
        numpy_floor = floors.numpy_topk(models.item_factors, queries, k=20)
        del models
        from app.settings import Settings

        settings = Settings(database_url=stack.database_url, redis_url=stack.redis_url, data_dir=stack.data_dir)
        als = floors.als_alone(settings, org.org_id)
        out["floors"] = {"numpy_topk": numpy_floor, "als_alone": als}

        watch = ["api", "worker"]
        profiler = Profiler(opts.profile_dir)
        profiled = {"personalized", "session_based", "popular"}
        api_pid = stack.children["api"].pid
        api_port = stack.children["api"].port or 0
        floor_port = stack.children["floor"].port or 0
        recommend: dict[str, Any] = {}
        for concurrency, label in ((opts.concurrency, "loaded"), (1, "unloaded")):
            phases: dict[str, Any] = {}
            log(f"recommend, concurrency {concurrency}: bare FastAPI JSON endpoint floor")
            bodies = recommend_bodies(ds, samples, VARIANTS[0])
            floor_stats, _ = run_phase(
                loadgen, sampler, f"floor-json-c{concurrency}", port=floor_port, concurrency=concurrency,
                opts=opts, watch=["floor"], server_latency=False,
                templates=[Template("floor", floors.JSON_PATH, {}, bodies)],
            )
            out["floors"][f"bare_json_c{concurrency}"] = floor_stats
            for variant in VARIANTS:
                log(f"recommend, concurrency {concurrency}: {variant.name}")
                stats, result = run_phase(
                    loadgen, sampler, f"{variant.name}-c{concurrency}", port=api_port, concurrency=concurrency,
                    opts=opts, watch=watch,
                    profile=(profiler, api_pid) if label == "loaded" and variant.name in profiled else None,
                    templates=[Template(variant.name, RECOMMEND_PATH, {"X-API-KEY": org.publishable_key},
                                        recommend_bodies(ds, samples, variant))],
                )
                phases[variant.name] = stats
                if label == "loaded":
                    window = result.window() & (result.status == 200)
                    raw[variant.name] = {"client_ms": result.lat[window] * 1000,
                                         "server_ms": result.server_ms[window]}
            recommend[label] = {"concurrency": concurrency, "variants": phases}
        out["recommend"] = recommend
        memory["api_rss_mb_after_recommend"] = rss_mb(sampler, "api")

        log("ingest: accepted by one api process, persisted by one worker")
        out["ingest"] = run_ingest(
            stack, loadgen, sampler, pool=event_pool(ds, size=opts.ingest_pool), api="api", floor="floor",
            worker="worker", concurrency=opts.concurrency, duration_s=opts.duration_s, warmup_s=opts.warmup_s,
            log=log, profiler=profiler,
        )
        memory["api_rss_mb_end"] = rss_mb(sampler, "api")
        memory["worker_rss_mb_end"] = rss_mb(sampler, "worker")
        out["memory"] = memory
        raw["numpy_p99_ms"] = numpy_floor["ms"]["p99"]
    finally:
        api.close()
        for name in ("api", "worker", "floor"):
            sampler.forget(name)
        stack.stop("api", "worker", "floor")
    return out, raw


def run(opts: BenchOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """One `lehnz bench` invocation: the speed run and/or the soak, then the reports."""
    from benchmarks.speed import report, soak

    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="lehnz-bench-"))
    meta = {
        "command": opts.command,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(),
        "code": code_version(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                    if k not in ("command", "extra", "data_dir", "out", "docs", "write_docs", "keep")},
        "loadgen": "own process; asyncio + uvloop + httptools, HTTP/1.1 keep-alive, closed loop "
                   "(bounded concurrency)",
        "settings_env": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith("LEHNZ_") and "URL" not in k and "SECRET" not in k},
    }
    stack = Stack(data_dir)
    sampler = ResourceSampler(interval_s=0.5)
    loadgen: LoadGen | None = None
    sections: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    try:
        log(f"embedded servers under {data_dir}")
        stack.open()
        sampler.start()
        loadgen = LoadGen(data_dir / "loadgen")
        if not opts.soak_only:
            speed, raw = run_speed(opts, stack, sampler, loadgen, log)
            speed["goals"] = report.speed_goals(speed)
            sections["speed"] = {"meta": {**meta, "finished_at": _now()}, **speed}
        if opts.soak_s > 0:
            soak_result = soak.run_soak(opts, stack, sampler, loadgen, log)
            soak_result["goals"] = report.soak_goals(soak_result)
            sections["soak"] = {"meta": {**meta, "finished_at": _now()}, **soak_result}
    finally:
        # Every step runs even if one fails: no child process or embedded server is left behind.
        for step in (sampler.stop, loadgen.close if loadgen is not None else None, stack.close):
            if step is None:
                continue
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                log(f"cleanup step {getattr(step, '__qualname__', step)} failed: {exc!r}")
        if not opts.keep and opts.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif opts.keep:
            log(f"kept the data dir {data_dir} (logs in {data_dir / 'logs'})")
    merged = report.write_results(opts.out, sections)
    if "speed" in sections and opts.plots:
        report.latency_plot(raw, sections["speed"], opts.out.parent / "latency.png")
    if "soak" in sections and opts.plots:
        report.soak_plot(sections["soak"], opts.out.parent / "soak.png")
    if opts.write_docs:
        report.write_docs(opts.docs, merged, image_dir=os.path.relpath(opts.out.parent, opts.docs.parent))
    return merged


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def stderr_log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)
