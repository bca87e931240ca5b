"""`lehnz bench`: the speed benchmark (code in benchmarks/speed/; this module stays light to import)."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

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
    quick: Annotated[bool, typer.Option(help="tiny sizes and 1 s phases (the smoke test)")] = False,
    soak: Annotated[float, typer.Option(help="also run a soak of this many seconds (issue 6)")] = 0.0,
    soak_only: Annotated[bool, typer.Option(help="run only the soak (keeps the speed section of --out)")] = False,
    soak_rate: Annotated[float | None, typer.Option(help="soak requests/s, open loop [default: 100]")] = None,
    out: Annotated[Path, typer.Option(help="results JSON; the PNG plots are written beside it")] = Path(
        "docs/benchmarks/speed.json"
    ),
    write_docs: Annotated[bool, typer.Option(help="rewrite the speed region of --docs")] = False,
    docs: Annotated[Path, typer.Option(help="the markdown file whose speed region --write-docs rewrites")] = Path(
        "docs/benchmarks.md"
    ),
    shared_data: Annotated[Path, typer.Option(help="where the real datasets are (read in place)")] = Path(
        "../shared/data"
    ),
    data_dir: Annotated[Path | None, typer.Option(help="servers' data dir [default: a fresh temporary one]")] = None,
    keep: Annotated[bool, typer.Option(help="keep the temporary data dir (logs of every process)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the synthetic data and the request mix")] = 7,
    profile: Annotated[Path | None, typer.Option(help="py-spy flame graphs of chosen phases here (pip install py-spy)")]
    = None,
) -> None:
    """Speed benchmark: latency, throughput, ingest, training, memory, each against its floor."""
    if dataset not in DATASETS:
        raise typer.BadParameter(f"use one of {', '.join(DATASETS)}", param_hint="--dataset")
    if soak_only and soak <= 0:
        raise typer.BadParameter("--soak-only needs --soak SECONDS", param_hint="--soak-only")

    from benchmarks.speed.run import BenchOptions, run, stderr_log

    # SIGTERM unwinds like Ctrl-C, so every child process and the embedded servers are stopped.
    signal.signal(signal.SIGTERM, _exit_on_signal)

    given = {
        "items": items, "interactions": interactions, "users": users, "duration_s": duration,
        "warmup_s": warmup, "concurrency": concurrency, "soak_rate": soak_rate,
    }
    sizes = {k: v for k, v in given.items() if v is not None}
    common = {
        "dataset": dataset, "soak_s": soak, "soak_only": soak_only, "out": out, "write_docs": write_docs,
        "docs": docs, "shared_data": shared_data, "data_dir": data_dir, "keep": keep, "seed": seed,
        "profile_dir": profile,
        "command": "lehnz " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
    }
    opts = BenchOptions.quick_sizes(**sizes, **common) if quick else BenchOptions(**sizes, **common)
    merged = run(opts, stderr_log)
    failed = [g for section in ("speed", "soak") for g in merged.get(section, {}).get("goals", [])
              if g.get("met") is False]
    typer.echo(f"results: {out}" + (f"; docs: {docs}" if write_docs else ""))
    for goal in failed:
        typer.echo(f"goal missed (issue {goal['issue']}): {goal['goal']} [{goal['context'] or '-'}]: "
                   f"{goal['measured']} vs {goal['target']} {goal['unit']}")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
