"""`lehnz eval`: offline recommendation quality on public datasets, published in docs/benchmarks.md.

Only light imports here: the cli imports this module when `lehnz --help` lists the commands. The
harness (benchmarks/quality) and the server code it measures load inside the command.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks" / "quality.json"
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
PROTOCOLS = ("movielens-gorse", "movielens-temporal", "movielens-loo", "retail-fbt", "retail-session",
             "retail-next-basket", "tuning", "e2e")
MOVIELENS = {"movielens-gorse", "movielens-temporal", "movielens-loo", "tuning", "e2e"}
RETAIL = {"retail-fbt", "retail-session", "retail-next-basket", "tuning", "e2e"}
# --quick: a slice of each dataset, small enough for the test suite.
QUICK_USERS = 100  # MovieLens user ids 1..100
QUICK_E2E_USERS = 40  # MovieLens user ids 1..40 through a real server (no retail end to end)
QUICK_RETAIL_FROM = "2011-09-01"  # two months of training invoices (one for tuning), same test period
QUICK_INVOICES = 60


def eval_command(
    data_dir: Annotated[Path, typer.Option(help="the shared datasets folder (read in place)")] = DEFAULT_DATA,
    only: Annotated[
        str | None, typer.Option(help="comma-separated protocols to run (the names are listed above); default: all")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="folds of the Gorse protocol")] = 5,
    session_invoices: Annotated[
        int, typer.Option(min=1, help="test invoices sampled for the session_based protocol")
    ] = 1000,
    quick: Annotated[bool, typer.Option("--quick", help="smoke version on a small slice of each dataset")] = False,
    out: Annotated[
        Path | None, typer.Option(help=f"JSON report (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; "
                                       "--quick writes none unless given)")
    ] = None,
    write_docs: Annotated[bool, typer.Option("--write-docs", help="rewrite the quality region of "
                                                                  "docs/benchmarks.md")] = False,
) -> None:
    """Measure recommendation quality (MovieLens 100K, UCI Online Retail) against baselines,
    through the server's production path (in-process, and end to end over HTTP: `e2e`).

    \b
    Protocols (--only):
      movielens-gorse, movielens-temporal, movielens-loo,
      retail-fbt, retail-session, retail-next-basket, tuning,
      e2e (a fresh `lehnz serve`, over HTTP)
    """
    from rich.console import Console

    from benchmarks.quality import report
    from benchmarks.quality.machine import describe

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough that method names are not cut
        console = Console(width=140)
    machine = describe()  # before the run: its load average is the other work on the machine
    wanted = _parse_only(only)
    if quick and write_docs:
        raise typer.BadParameter("--quick numbers are a smoke test; they are never published", param_hint="--quick")
    if not data_dir.is_dir():
        raise typer.BadParameter(f"{data_dir} is not a directory", param_hint="--data-dir")
    started = time.perf_counter()
    results = _run(data_dir, wanted, folds=folds, session_invoices=session_invoices, quick=quick, console=console)
    options = {"--quick": quick, f"--only {only}": bool(only), f"--folds {folds}": folds != 5,
               f"--session-invoices {session_invoices}": session_invoices != 1000, "--write-docs": write_docs}
    target = out if out is not None else (None if quick else DEFAULT_OUT)
    command = " ".join(["lehnz eval", *(option for option, given in options.items() if given)])
    generated_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for result in results:  # which run produced each protocol's numbers survives a later --only merge
        result["run"] = {"command": command, "generated_at": generated_at}
    fresh: dict[str, Any] = {
        "command": command,
        "generated_at": generated_at,
        "machine": machine,
        "total_seconds": round(time.perf_counter() - started, 1),
        "complete": set(wanted) == set(PROTOCOLS) and not quick,
        "quick": quick,
        "protocols": {result["key"]: result for result in results},
    }
    merged = _merge(target, fresh)
    for key in report.ORDER:
        if key in fresh["protocols"]:
            report.print_protocol(console, fresh["protocols"][key])
    console.print(f"[bold]eval finished in {fresh['total_seconds']:.0f} s[/]")
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(merged, indent=1, sort_keys=False) + "\n")
        console.print(f"wrote {target}")
    if write_docs:
        report.write_region(DOCS, report.markdown(merged))
        console.print(f"updated the quality region of {DOCS}")


def _parse_only(only: str | None) -> list[str]:
    if not only:
        return list(PROTOCOLS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PROTOCOLS))
    if unknown:
        raise typer.BadParameter(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}", param_hint="--only")
    return [name for name in PROTOCOLS if name in names]


def _run(
    data_dir: Path, wanted: list[str], *, folds: int, session_invoices: int, quick: bool, console: Any
) -> list[dict[str, Any]]:
    from benchmarks.quality.datasets import load_movielens, load_online_retail, unix
    from benchmarks.quality.protocols import e2e, movielens, retail, tuning
    from benchmarks.quality.serving import default_settings

    def progress(line: str) -> None:
        console.print(f"[dim]  {line}[/]")

    settings = default_settings()
    results: list[dict[str, Any]] = []
    ratings = lines = None
    if MOVIELENS & set(wanted):
        ratings = load_movielens(data_dir)
        if quick:  # the slice: its users and the movies they rated (the others are never a target)
            ratings = ratings.subset(ratings.users <= QUICK_USERS).rated_catalog()
    if RETAIL & set(wanted):
        lines = load_online_retail(data_dir)
        if quick:
            lines = lines.subset(lines.timestamps >= unix(QUICK_RETAIL_FROM))
    invoices = QUICK_INVOICES if quick else session_invoices
    # Trained once per run: the retail protocols share one training, and the end-to-end
    # protocol compares its answers with the in-process runs of the same splits.
    world: retail.RetailWorld | None = None
    loo: movielens.LooRun | None = None
    basket: retail.BasketRun | None = None
    for name in wanted:
        console.print(f"[dim]running {name}...[/]")
        if name in ("retail-fbt", "retail-session", "retail-next-basket") and world is None:
            assert lines is not None
            world = retail.retail_world(lines, settings, train_before=retail.TEST_FROM)
        if name == "movielens-gorse":
            assert ratings is not None
            result = movielens.gorse_protocol(ratings, settings, folds=2 if quick else folds)
        elif name == "movielens-temporal":
            assert ratings is not None
            result = movielens.temporal_protocol(ratings, settings)
        elif name == "movielens-loo":
            assert ratings is not None
            loo = movielens.loo_run(ratings, settings)
            result = movielens.loo_protocol(ratings, settings, run=loo)
        elif name == "retail-fbt":
            assert world is not None
            result = retail.fbt_protocol(world, max_invoices=QUICK_INVOICES * 4 if quick else None)
        elif name == "retail-session":
            assert world is not None
            result = retail.session_protocol(world, max_invoices=invoices)
        elif name == "retail-next-basket":
            assert world is not None
            basket = retail.basket_run(world)
            result = retail.next_basket_protocol(world, run=basket)
        elif name == "tuning":
            assert ratings is not None
            result = tuning.tuning_protocol(ratings, lines, settings, quick=quick, progress=progress)
        else:
            assert ratings is not None
            if quick:  # a small slice, MovieLens only: the smoke test of the HTTP path
                small = ratings.subset(ratings.users <= QUICK_E2E_USERS).rated_catalog()
                found = e2e.e2e_protocols(small, None, settings, progress=progress)
            else:
                found = e2e.e2e_protocols(ratings, lines, settings, loo=loo, basket=basket, progress=progress)
            results.extend(_plain(r.to_json()) for r in found)
            continue
        results.append(_plain(result.to_json()))
    return results


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, recursively, so the report is plain JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _merge(target: Path | None, fresh: dict[str, Any]) -> dict[str, Any]:
    """A partial run replaces its protocols inside the last report; a full run replaces it all."""
    if fresh["complete"] or target is None or not target.exists():
        return fresh
    previous = json.loads(target.read_text())
    if previous.get("quick") != fresh["quick"]:
        return fresh
    kept = {key: {**protocol, "run": protocol.get("run") or {"command": previous.get("command"),
                                                             "generated_at": previous.get("generated_at")}}
            for key, protocol in previous.get("protocols", {}).items()}
    return {**fresh, "complete": False, "protocols": {**kept, **fresh["protocols"]}}
