"""`lehnz bench --train-scale`: what a big tenant's train costs, from 1M to 50M events.

For each size, a synthetic shop (benchmarks/speed/synthetic.py: 100k items, UUID user ids, 20
events per user) is bulk-loaded into the embedded PostgreSQL (bulk_events.py: binary COPY, the
events table emptied first), then trained the way the worker trains: `run_training` in a spawned
child process of the worker's own executor (load -> fit -> artifact). Measured per size: every
part's seconds (from the artifact's manifest), the child's peak RSS (its own VmHWM, and a
0.25 s psutil sample as a cross-check), the memory estimate the budget check made, and the
`implicit` ALS fit alone on the same matrix (floors.als_alone, in a child of its own). The first
train of an org runs the model search, so every train here includes one; the tables report the
train with and without its `search` part.

The preload rebuilds only the index a train reads (org_id, occurred_at): the unique and per-user
indexes serve ingest idempotency and erasure, and at 50M events take longer to build than the
rows take to write. The table's rows are what the worker would have written.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

START, END = "<!-- train-scale:start -->", "<!-- train-scale:end -->"
SIZES = (1_000_000, 5_000_000, 20_000_000, 50_000_000)
QUICK_SIZES = (3_000, 9_000)
TRAIN_INDEXES = ("ix_events_org_time",)
MB = 1024 * 1024
# Goals of issue 17.
PEAK_RSS_GOAL_MB = 6 * 1024
LOAD_SHARE_GOAL = 0.25
EXPONENT_GOAL = 1.1
ALS_FACTOR_GOAL = 3.0


@dataclass
class ScaleOptions:
    sizes: tuple[int, ...] = SIZES
    items: int = 100_000
    events_per_user: int = 20
    seed: int = 7
    als_floor: bool = True
    data_dir: Path | None = None
    keep: bool = False
    out: Path = Path("docs/benchmarks/train_scale.json")
    docs: Path = Path("docs/benchmarks.md")
    write_docs: bool = False
    plots: bool = True
    command: str = "lehnz bench --train-scale"
    extra_env: dict[str, str] = field(default_factory=dict)


def run_train_scale(opts: ScaleOptions, log: Callable[[str], None]) -> dict[str, Any]:
    from benchmarks.speed.run import code_version, machine_info
    from benchmarks.speed.server import Stack

    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="lehnz-train-scale-"))
    meta = {
        "command": opts.command,
        "started_at": _now(),
        "machine": machine_info(),
        "code": code_version(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                    if k not in ("command", "data_dir", "out", "docs", "write_docs", "keep")},
        "settings_env": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith("LEHNZ_") and "URL" not in k and "SECRET" not in k},
    }
    stack = Stack(data_dir)
    sizes: list[dict[str, Any]] = []
    try:
        log(f"embedded servers under {data_dir}")
        stack.open()
        for size in opts.sizes:
            sizes.append(_one_size(opts, stack, size, log))
            _write(opts, meta, sizes)  # a long run keeps what it measured so far
    finally:
        stack.close()
        if not opts.keep and opts.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    meta["finished_at"] = _now()
    return _write(opts, meta, sizes, final=True)


def _one_size(opts: ScaleOptions, stack: Any, size: int, log: Callable[[str], None]) -> dict[str, Any]:
    from app.settings import Settings
    from benchmarks.speed.bulk_events import World, bulk_load
    from benchmarks.speed.synthetic import synthetic

    users = max(size // opts.events_per_user, 1)
    log(f"{size:,} events: generating {opts.items:,} items, {users:,} users")
    started = time.perf_counter()
    world = World.of(synthetic(items=opts.items, interactions=size, users=users, seed=opts.seed))
    generated_s = time.perf_counter() - started
    org = stack.create_org(f"scale-{size}")
    log(f"{size:,} events: bulk load (binary COPY)")
    preload = asyncio.run(bulk_load(stack.database_url or "", org.org_id, world, indexes=TRAIN_INDEXES, log=log))
    del world
    gc.collect()
    settings = Settings(database_url=stack.database_url, redis_url=stack.redis_url, data_dir=stack.data_dir,
                        model_dir=stack.model_dir)
    log(f"{size:,} events: training in the worker's child process")
    train = _train(settings, org.org_id, opts)
    result: dict[str, Any] = {"events": size, "users": users, "items": opts.items, "generated_s": generated_s,
                              "preload": preload, "train": train}
    if "error" not in train and opts.als_floor:
        chosen = (train.get("search") or {}).get("chosen") or {}
        configured = {"factors": settings.als_factors, "regularization": settings.als_regularization,
                      "alpha": settings.als_alpha, "iterations": settings.als_iterations}
        if chosen.get("model") == "als" and {k: float(v) for k, v in (chosen.get("params") or {}).items()} == {
                k: float(v) for k, v in configured.items()}:
            # The train's own final fit was the configured ALS on this very matrix: that is the floor.
            result["als_alone"] = {"seconds": train["timings_s"]["als"], "source": "the train's final fit"}
        else:
            log(f"{size:,} events: the ALS fit alone on the same matrix")
            result["als_alone"] = {**_in_child(_als_alone, settings.model_dump(), org.org_id),
                                   "source": "floors.als_alone in a child process"}
    log(f"{size:,} events: {json.dumps(_headline(result))}")
    return result


def _train(settings: Any, org_id: str, opts: ScaleOptions) -> dict[str, Any]:
    """run_training as the worker runs it (its executor: spawned, one task per child)."""
    from workers.training import new_executor, run_training

    executor = new_executor()
    sampled = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                try:
                    sampled["rss"] = max(sampled["rss"], psutil.Process(process.pid).memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
                    pass
            stop.wait(0.25)

    thread = threading.Thread(target=sample, name="train-rss", daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        summary = executor.submit(run_training, org_id, settings.model_dump(), None, False).result()
    except Exception as exc:  # noqa: BLE001 - a refused or failed train is a result too
        summary = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stop.set()
        thread.join(timeout=5)
        executor.shutdown(wait=True)
    summary["wall_s"] = time.perf_counter() - started
    summary["sampled_peak_rss_mb"] = sampled["rss"] / MB
    if "version" in summary:
        manifest = json.loads((settings.models_path / org_id / summary["version"] / "manifest.json").read_text())
        extra = manifest.get("extra", {})
        summary["memory_mb"] = extra.get("memory_mb")
        summary["window"] = extra.get("window")
        quality = summary.pop("quality", None) or {}
        summary["search"] = {"chosen": quality.get("chosen"), "complete": quality.get("complete"),
                             "candidates": len(quality.get("candidates") or [])}
    return summary


def _als_alone(settings_data: dict[str, Any], org_id: str) -> dict[str, Any]:
    from app.settings import Settings
    from benchmarks.speed.floors import als_alone

    return als_alone(Settings(**settings_data), org_id)


def _in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        try:
            return pool.submit(function, *args).result()
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}


# --- results ---------------------------------------------------------------------------------
def _headline(size: dict[str, Any]) -> dict[str, Any]:
    train = size["train"]
    if "error" in train:
        return {"events": size["events"], "error": train["error"]}
    parts = train.get("timings_s", {})
    whole = train["duration_ms"] / 1000
    search = parts.get("search", 0.0)
    als = (size.get("als_alone") or {}).get("seconds")
    return {
        "events": size["events"],
        "whole_s": round(whole, 1),
        "search_s": round(search, 1),
        "load_s": round(parts.get("load", 0.0), 1),
        "peak_rss_mb": (train.get("memory_mb") or {}).get("peak_rss"),
        "estimated_mb": (train.get("memory_mb") or {}).get("estimated"),
        "als_alone_s": None if als is None else round(als, 1),
    }


def peak_part(memory: dict[str, Any]) -> str | None:
    """The part during which the training process reached its peak RSS: the first whose
    end-of-part peak (VmHWM only grows; `peak_rss_after` lists [part, MB] as they ran) is
    the highest."""
    after = memory.get("peak_rss_after") or []
    highest = max((mb for _, mb in after), default=None)
    return next((part for part, mb in after if mb == highest), None)


def fitted_exponent(events: list[float], seconds: list[float]) -> float | None:
    """b of seconds = a * events^b, least squares in log-log."""
    if len(events) < 2:
        return None
    slope, _ = np.polyfit(np.log(events), np.log(seconds), 1)
    return float(slope)


def goals(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from benchmarks.speed.report import _goal

    ok = [s for s in sizes if "error" not in s["train"]]
    out: list[dict[str, Any]] = []
    largest = max((s["events"] for s in sizes), default=0)
    out.append(_goal(17, f"{largest:,} events with UUID user ids train", 1.0 if any(
        s["events"] == largest for s in ok) else 0.0, 1.0, higher_is_better=True, unit="", context="trained"))
    for s in ok:
        train, context = s["train"], f"{s['events']:,} events"
        whole = train["duration_ms"] / 1000
        parts = train.get("timings_s", {})
        out.append(_goal(17, "peak RSS of the training process <= 6 GB",
                         (train.get("memory_mb") or {}).get("peak_rss"), PEAK_RSS_GOAL_MB, higher_is_better=False,
                         unit="MB", context=context))
        out.append(_goal(17, "load part <= 25% of the train", parts.get("load", 0.0) / whole, LOAD_SHARE_GOAL,
                         higher_is_better=False, unit="share", context=context))
        als = (s.get("als_alone") or {}).get("seconds")
        if als:
            if "search" in parts:  # not when the run had LEHNZ_MODEL_SEARCH=false
                out.append(_goal(17, "whole train <= 3x the ALS fit alone", whole / als, ALS_FACTOR_GOAL,
                                 higher_is_better=False, unit="x", context=f"{context}, with the model search"))
            out.append(_goal(17, "whole train <= 3x the ALS fit alone", (whole - parts.get("search", 0.0)) / als,
                             ALS_FACTOR_GOAL, higher_is_better=False, unit="x",
                             context=f"{context}, without the model search"))
    if len(ok) >= 2:
        events = [float(s["events"]) for s in ok]
        whole = [s["train"]["duration_ms"] / 1000 for s in ok]
        bare = [w - s["train"].get("timings_s", {}).get("search", 0.0) for w, s in zip(whole, ok)]
        span = f"{min(events):,.0f}-{max(events):,.0f} events"
        if all("search" in s["train"].get("timings_s", {}) for s in ok):
            out.append(_goal(17, "train time grows at most linearly (fitted exponent <= 1.1)",
                             fitted_exponent(events, whole), EXPONENT_GOAL, higher_is_better=False, unit="",
                             context=f"{span}, with the model search"))
        out.append(_goal(17, "train time grows at most linearly (fitted exponent <= 1.1)",
                         fitted_exponent(events, bare), EXPONENT_GOAL, higher_is_better=False, unit="",
                         context=f"{span}, without the model search"))
    return out


def _write(opts: ScaleOptions, meta: dict[str, Any], sizes: list[dict[str, Any]], *, final: bool = False
           ) -> dict[str, Any]:
    from benchmarks.speed.report import _clean

    section: dict[str, Any] = {"meta": meta, "sizes": sizes, "goals": goals(sizes)}
    result: dict[str, Any] = {"schema": 1, "train_scale": section}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(_clean(result), indent=1) + "\n")
    if final and opts.plots and sizes:
        plot(section, opts.out.parent / "train_scale.png")
    if final and opts.write_docs:
        write_docs(opts.docs, section, image_dir=os.path.relpath(opts.out.parent, opts.docs.parent))
    return result


# --- plot and page -----------------------------------------------------------------------------
MAIN_PARTS = ("load", "search", "als", "knn", "content", "coengagement", "matrix")


def plot(scale: dict[str, Any], path: Path) -> None:
    from benchmarks.speed.report import _pyplot

    plt = _pyplot()
    ok = [s for s in scale["sizes"] if "error" not in s["train"]]
    if not ok:
        return
    events = np.array([s["events"] for s in ok], dtype=float) / 1e6
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.plot(events, [s["train"]["duration_ms"] / 1000 for s in ok], "k-o", label="whole train")
    left.plot(events, [s["train"]["duration_ms"] / 1000 - s["train"]["timings_s"].get("search", 0.0) for s in ok],
              "k--o", label="whole train without the model search")
    if all(s.get("als_alone", {}).get("seconds") for s in ok):
        left.plot(events, [s["als_alone"]["seconds"] for s in ok], "r-s", label="ALS fit alone (floor)")
    for part in MAIN_PARTS:
        left.plot(events, [s["train"]["timings_s"].get(part, 0.0) for s in ok], "-", alpha=0.7, label=part)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("events (millions)")
    left.set_ylabel("seconds")
    left.set_title("train time by part")
    left.legend(fontsize=7)
    right.plot(events, [(s["train"].get("memory_mb") or {}).get("peak_rss") for s in ok], "b-o",
               label="peak RSS of the training process")
    right.plot(events, [(s["train"].get("memory_mb") or {}).get("estimated") for s in ok], "b--",
               label="estimate the budget check used")
    right.axhline(PEAK_RSS_GOAL_MB, color="r", linestyle=":", label="goal: 6 GB")
    right.set_xlabel("events (millions)")
    right.set_ylabel("MB")
    right.set_title("memory")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(scale: dict[str, Any], image_dir: str) -> str:
    from benchmarks.speed.report import _f, _goal_rows, _machine

    meta = scale["meta"]
    lines = [
        (f"Measured {meta.get('finished_at') or meta['started_at']} with `{meta['command']}` on "
        f"{_machine(meta)}. Synthetic shop: {scale['sizes'][0]['items']:,} items, UUID user ids, "
        f"{meta['options']['events_per_user']} events per user; each size bulk-loaded, then trained by "
        "`run_training` in a spawned child (the worker's own executor). Times are seconds; RSS is the "
        "training process's peak (its own VmHWM; before 2026-12-08 ru_maxrss, which included the RSS of the "
        "bench process the child was spawned from); \"peak set in\" names the part during which it was reached."),
        "",
        ("| events | users | whole train | without search | search | load | matrix | ALS | kNN | content | "
        "co-engagement | ALS alone | train / ALS alone | peak RSS | peak set in | estimate |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scale["sizes"]:
        train = s["train"]
        if "error" in train:
            lines.append(f"| {s['events']:,} | {s['users']:,} | failed: {train['error'][:120]} |" + " |" * 13)
            continue
        parts = train.get("timings_s", {})
        whole = train["duration_ms"] / 1000
        als = (s.get("als_alone") or {}).get("seconds")
        memory = train.get("memory_mb") or {}
        ratio = f"{whole / als:.2f}x / {(whole - parts.get('search', 0.0)) / als:.2f}x" if als else "n/a"
        lines.append(
            f"| {s['events']:,} | {train.get('users', s['users']):,} | {_f(whole)} | "
            f"{_f(whole - parts.get('search', 0.0))} | {_f(parts.get('search'))} | {_f(parts.get('load'))} | "
            f"{_f(parts.get('matrix'))} | {_f(parts.get('als'))} | {_f(parts.get('knn'))} | "
            f"{_f(parts.get('content'))} | {_f(parts.get('coengagement'))} | {_f(als)} | {ratio} | "
            f"{_f(memory.get('peak_rss'), 0)} MB | {peak_part(memory) or 'n/a'} | {_f(memory.get('estimated'), 0)} MB |"
        )
    lines += ["", "Preload (bulk_events.py) per size: " + "; ".join(
        f"{s['events']:,}: {_f(s['preload']['events_s'] + s['preload']['indexes_s'], 0)} s "
        f"({_f(s['preload']['events_per_s'], 0)} events/s)" for s in scale["sizes"]) + ".", "",
              "Goals (issue 17):", ""]
    lines += _goal_rows(scale["goals"])
    lines += ["", f"![train time and memory against events]({image_dir}/train_scale.png)"]
    return "\n".join(lines)


def write_docs(docs: Path, scale: dict[str, Any], *, image_dir: str) -> None:
    text = docs.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{docs} has no {START} ... {END} region")
    docs.write_text(text[: start + len(START)] + "\n" + markdown(scale, image_dir) + "\n" + text[end:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

