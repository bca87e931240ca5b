"""`lehnz bench`: the speed benchmark (code in benchmarks/speed/; this module stays light to import).

The PNG plots need matplotlib (the `bench` extra): without it the run writes its results JSON
and skips the plots, saying so before it starts; `--write-docs`, whose page shows the plots, is
refused up front instead of after minutes of measuring.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

DATASETS = ("synthetic", "ml-100k", "online-retail")


def bench_command(
    dataset: Annotated[str, typer.Option(help="synthetic, ml-100k or online-retail (read in place)")] = "synthetic",
    items: Annotated[int | None, typer.Option(help="synthetic catalog size [default: 100000]")] = None,
    interactions: Annotated[int | None, typer.Option(help="synthetic interactions [default: 1000000]")] = None,
    users: Annotated[int | None, typer.Option(help="synthetic users [default: 50000]")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds measured per phase [default: 10]")] = None,
    warmup: Annotated[float | None, typer.Option(help="seconds of warm-up before each phase [default: 2]")] = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight [default: 8]")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="tiny sizes and sub-second phases (the smoke test)")] = False,
    soak: Annotated[float, typer.Option(help="also run a soak (steady mixed load) of this many seconds")] = 0.0,
    soak_only: Annotated[bool, typer.Option("--soak-only", help="run only the soak (keeps the speed section of "
                                                                "--out)")] = False,
    soak_rate: Annotated[float | None, typer.Option(help="soak requests/s, open loop [default: 100]")] = None,
    out: Annotated[Path, typer.Option(help="results JSON; the PNG plots (with matplotlib) are written beside "
                                           "it")] = Path(
        "docs/benchmarks/speed.json"
    ),
    write_docs: Annotated[bool, typer.Option("--write-docs", help="rewrite the speed region of --docs (needs "
                                                                  "matplotlib for its plots)")] = False,
    docs: Annotated[Path, typer.Option(help="the markdown file whose speed region --write-docs rewrites")] = Path(
        "docs/benchmarks.md"
    ),
    shared_data: Annotated[Path, typer.Option(help="where the real datasets are (read in place)")] = Path(
        "../shared/data"
    ),
    data_dir: Annotated[Path | None, typer.Option(help="servers' data dir [default: a fresh temporary one]")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="keep the temporary data dir (logs of every process)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the synthetic data and the request mix")] = 7,
    profile: Annotated[Path | None, typer.Option(help="py-spy flame graphs of chosen phases here (pip install py-spy)")]
    = None,
    train_scale: Annotated[bool, typer.Option("--train-scale", help="instead: train at growing sizes (big tenants), "
                                                                    "results in train_scale.json")] = False,
    scale_sizes: Annotated[str, typer.Option(help="--train-scale's event counts, comma-separated")] = (
        "1000000,5000000,20000000,50000000"
    ),
    big_catalog: Annotated[bool, typer.Option("--big-catalog", help="instead: serve a 1M-item catalog (10M events; "
                                                                    "--items/--interactions/--users change it), "
                                                                    "results in big_catalog.json")] = False,
) -> None:
    """Speed benchmark: latency, throughput, ingest, training, memory, each against its floor."""
    if dataset not in DATASETS:
        raise typer.BadParameter(f"use one of {', '.join(DATASETS)}", param_hint="--dataset")
    if soak_only and soak <= 0:
        raise typer.BadParameter("--soak-only needs --soak SECONDS", param_hint="--soak-only")
    plots = _can_plot()
    if not plots and write_docs:
        raise typer.BadParameter("the page it writes shows the PNG plots, which need matplotlib: "
                                 "pip install -e '.[bench]' (or leave --write-docs out)", param_hint="--write-docs")
    if not plots:
        typer.echo("note: matplotlib is not installed (pip install -e '.[bench]'): the results JSON is written, "
                   "the PNG plots are skipped", err=True)

    if big_catalog:
        _big_catalog(items=items, interactions=interactions, users=users, duration=duration, warmup=warmup,
                     quick=quick, out=out, write_docs=write_docs, docs=docs, data_dir=data_dir, keep=keep, seed=seed)
        return
    if train_scale:
        _train_scale(scale_sizes, items=items, quick=quick, out=out, write_docs=write_docs, docs=docs,
                     data_dir=data_dir, keep=keep, seed=seed, plots=plots)
        return

    from benchmarks.speed.run import BenchOptions, run, stderr_log

    # SIGTERM unwinds like Ctrl-C, so every child process and the embedded servers are stopped.
    signal.signal(signal.SIGTERM, _exit_on_signal)

    given = {
        "items": items, "interactions": interactions, "users": users, "duration_s": duration,
        "warmup_s": warmup, "concurrency": concurrency, "soak_rate": soak_rate,
    }
    sizes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    common: dict[str, Any] = {
        "dataset": dataset, "soak_s": soak, "soak_only": soak_only, "out": out, "write_docs": write_docs,
        "docs": docs, "shared_data": shared_data, "data_dir": data_dir, "keep": keep, "seed": seed,
        "profile_dir": profile, "plots": plots,
        "command": _command_line(),
    }
    opts = BenchOptions.quick_sizes(**sizes, **common) if quick else BenchOptions(**sizes, **common)
    merged = run(opts, stderr_log)
    failed = [g for section in ("speed", "soak") for g in merged.get(section, {}).get("goals", [])
              if g.get("met") is False]
    typer.echo(f"results: {out}" + (f"; docs: {docs}" if write_docs else ""))
    for goal in failed:
        typer.echo(f"goal missed (issue {goal['issue']}): {goal['goal']} [{goal['context'] or '-'}]: "
                   f"{goal['measured']} vs {goal['target']} {goal['unit']}")


def _train_scale(sizes: str, *, items: int | None, quick: bool, out: Path, write_docs: bool, docs: Path,
                 data_dir: Path | None, keep: bool, seed: int, plots: bool) -> None:
    try:
        counts = tuple(int(part) for part in sizes.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter("a comma-separated list of event counts", param_hint="--scale-sizes") from None
    if not counts or min(counts) < 100:
        raise typer.BadParameter("event counts of at least 100", param_hint="--scale-sizes")
    from benchmarks.speed.run import stderr_log
    from benchmarks.speed.train_scale import QUICK_SIZES, START, ScaleOptions, run_train_scale

    if write_docs and (not docs.exists() or START not in docs.read_text()):
        raise typer.BadParameter(f"{docs} has no {START} region to rewrite", param_hint="--docs")
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if out == Path("docs/benchmarks/speed.json"):
        out = out.with_name("train_scale.json")
    opts = ScaleOptions(
        sizes=QUICK_SIZES if quick else counts, items=items or (300 if quick else 100_000), seed=seed,
        als_floor=not quick, data_dir=data_dir, keep=keep, out=out, docs=docs, write_docs=write_docs, plots=plots,
        command=_command_line(),
    )
    result = run_train_scale(opts, stderr_log)
    typer.echo(f"results: {out}" + (f"; docs: {docs}" if write_docs else ""))
    for goal in result["train_scale"]["goals"]:
        if goal.get("met") is False:
            typer.echo(f"goal missed (issue {goal['issue']}): {goal['goal']} [{goal['context'] or '-'}]: "
                       f"{goal['measured']} vs {goal['target']} {goal['unit']}")


def _big_catalog(*, items: int | None, interactions: int | None, users: int | None, duration: float | None,
                 warmup: float | None, quick: bool, out: Path, write_docs: bool, docs: Path, data_dir: Path | None,
                 keep: bool, seed: int) -> None:
    from benchmarks.speed.big_catalog import START, CatalogOptions, run_big_catalog
    from benchmarks.speed.run import stderr_log

    if write_docs and (not docs.exists() or START not in docs.read_text()):
        raise typer.BadParameter(f"{docs} has no {START} region to rewrite", param_hint="--docs")
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if out == Path("docs/benchmarks/speed.json"):
        out = out.with_name("big_catalog.json")
    small = {"items": 2_000, "interactions": 20_000, "users": 500, "duration_s": 0.3, "warmup_s": 0.1, "sample": 50}
    given = {"items": items, "interactions": interactions, "users": users, "duration_s": duration, "warmup_s": warmup}
    sizes: dict[str, Any] = {**(small if quick else {}), **{k: v for k, v in given.items() if v is not None}}
    opts = CatalogOptions(**sizes, seed=seed, data_dir=data_dir, keep=keep, out=out, docs=docs,
                          write_docs=write_docs, command=_command_line())
    result = run_big_catalog(opts, stderr_log)
    typer.echo(f"results: {out}" + (f"; docs: {docs}" if write_docs else ""))
    for goal in result["big_catalog"]["goals"]:
        if goal.get("met") is False:
            typer.echo(f"goal missed (issue {goal['issue']}): {goal['goal']} [{goal['context'] or '-'}]: "
                       f"{goal['measured']} vs {goal['target']} {goal['unit']}")


def _can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _command_line() -> str:
    """The command as run, with the LEHNZ_ settings it ran under (e.g. LEHNZ_MODEL_SEARCH=false):
    a published figure must say what produced it. Paths, URLs and secrets are left out."""
    hidden = ("URL", "SECRET", "TOKEN", "DIR", "PASSWORD")
    settings = [f"{name}={shlex.quote(value)}" for name, value in sorted(os.environ.items())
                if name.startswith("LEHNZ_") and not any(word in name for word in hidden)]
    return " ".join([*settings, "lehnz", *(shlex.quote(arg) for arg in sys.argv[1:])])
