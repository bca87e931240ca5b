"""Rendering: a rich table per protocol for the terminal, and the markdown of the quality
region of docs/benchmarks.md. Both read the JSON form, so a partial run (--only) can be merged
into the last full report before rendering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

START, END = "<!-- quality:start -->", "<!-- quality:end -->"
ORDER = ["movielens-gorse", "movielens-temporal", "retail-fbt", "retail-session", "tuning"]

METRIC_DEFINITIONS = """\
For one query (a user, a basket item, a session prefix) with target set T and a ranked list L
cut at K: hits = |L[:K] ∩ T|; **Precision@K** = hits / K; **Recall@K** = hits / |T|;
**HR@K** = 1 if hits > 0; **MRR@K** = 1 / (rank of the first hit), 0 without one;
**NDCG@K** = Σ over hit ranks r of 1/log2(r + 1), divided by the same sum for min(|T|, K)
hits at the top (binary relevance, gorse's definition). Each is averaged over queries (and, for
the Gorse protocol, then over folds). **Coverage@10** = distinct items in all users' top 10 /
catalog size. Ties in a ranking are broken by the lower model index, as the API does."""


def print_protocol(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=result["title"], title_justify="left")
    table.add_column("method")
    table.add_column("kind")
    for column in result["columns"]:
        table.add_column(column, justify="right")
    shown = result["rows"]
    if result["key"] == "tuning":  # every candidate is in the JSON and the docs; here the winners
        shown = [row for row in shown if row["note"] == "winner"]
    for row in shown:
        style = "bold" if row["kind"] == "strategy" or row["note"] == "winner" else None
        cells = [_number(row["metrics"].get(c)) for c in result["columns"]]
        table.add_row(row["name"], row["kind"] + (" *" if row["note"] == "winner" else ""), *cells, style=style)
    console.print(table)
    for goal in result["goals"]:
        mark = "[green]met[/]" if goal["met"] else "[red]NOT met[/]"
        console.print(f"  goal: {goal['text']}: {mark} ({goal['detail']})")
    console.print(f"  [dim]{result['seconds']:.1f} s[/]")


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    protocols = [report["protocols"][key] for key in ORDER if key in report["protocols"]]
    parts = [
        "## Quality (`lehnz eval`)",
        "",
        f"Measured {report['generated_at']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB RAM ({machine['os']}, Python {machine['python']}, {libs}). "
        f"Load average when the run started: {machine['load_average_at_start']} (the machine is shared "
        "with other work, so timings are upper bounds). "
        + (f"Whole run: **{report['total_seconds']:.0f} s** wall time." if report.get("complete") else
           "Protocols were run separately; per-protocol times are given with each."),
        "",
        (f"Reproduce: `{report['command']}` from the repository root (datasets are read in place from "
         "`../shared/data`; `--only` runs a subset and merges it into the existing report)."),
        "",
        "### Goals",
        "",
        "| protocol | goal | met | measured |",
        "|---|---|---|---|",
    ]
    for protocol in protocols:
        for goal in protocol["goals"]:
            parts.append(f"| {protocol['key']} | {goal['text']} | {'yes' if goal['met'] else '**no**'} | "
                         f"{goal['detail']} |")
    parts += ["", ("A difference smaller than about twice its standard error is a tie: the query sample alone "
                   "could reverse it.")]
    gaps = [(p, g) for p in protocols for g in p["goals"] if not g["met"] and g.get("closing")]
    if gaps:
        parts += ["", "**Gaps and what would close them.**", ""]
        parts += [f"- *{g['text']}* ({p['key']}): {g['closing']}" for p, g in gaps]
    for protocol in protocols:
        parts += ["", f"### {protocol['title']}", "", protocol["description"].strip(), ""]
        if protocol["key"] == "tuning":
            parts += _tuning(protocol)
        else:
            parts += _table(protocol["columns"], protocol["rows"])
            parts += ["", _facts(protocol["facts"]) + f" Time: {protocol['seconds']:.0f} s."]
    parts += ["", "### Metric definitions", "", METRIC_DEFINITIONS]
    return "\n".join(parts)


def write_region(path: Path, body: str) -> None:
    """Replace what lies between the quality markers; everything else in the file is untouched."""
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} region")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    path.write_text(pattern.sub(lambda _: f"{START}\n{body.rstrip()}\n{END}", text, count=1))


def _table(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | kind | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for row in rows:
        name = f"**{row['name']}**" if row["kind"] == "strategy" or row["note"] == "winner" else row["name"]
        kind = row["kind"] + (" (winner)" if row["note"] == "winner" else "")
        cells = " | ".join(_number(row["metrics"].get(c), empty="—") for c in columns)
        lines.append(f"| {name} | {kind} | {cells} |")
    return lines


def _tuning(protocol: dict[str, Any]) -> list[str]:
    facts = protocol["facts"]
    grid = facts["grid"]
    lines = ["Grid (each parameter swept with the others at their current best):", ""]
    for name, values in grid["als"].items():
        lines.append(f"- ALS `{name}`: {values}")
    lines.append(f"- EASE `ease_lambda` (with the ALS winner's decay): {grid['ease_lambda']}")
    for name, values in grid["pairs"].items():
        lines.append(f"- pairs `{name}`: {values}")
    lines.append(f"- `knn_neighbours` (K): {grid['knn_neighbours']}; the smallest K within 1% of the best "
                 "session_based validation score wins (memory and training time grow with K)")
    lines.append(f"- baselines: item-kNN K {grid['knn_baseline']}, EASE lambda {grid['ease_baseline']}")
    lines += [
        "",
        (f"Winner, now the `TrainParams` defaults: `{_inline(facts['chosen'])}`; `personalized` model on "
         f"small catalogs: **{facts['personalized_model']}**. Baselines: `{_inline(facts['baseline_winners'])}`. "
         f"Time: {protocol['seconds']:.0f} s."),
        "",
        "<details><summary>Every configuration tried (validation scores)</summary>",
        "",
        *_table(protocol["columns"], protocol["rows"]),
        "",
        "</details>",
    ]
    return lines


def _facts(facts: dict[str, Any]) -> str:
    parts = []
    for key, value in facts.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):  # e.g. the difference to each baseline: "name: +0.0100 ± 0.0020"
            value = ", ".join(f"{name} {_plain(v)}" for name, v in value.items())
            label += " (difference ± paired standard error)"
        parts.append(f"{label}: {_plain(value)}")
    return "Facts: " + "; ".join(parts) + "."


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_plain(v)}" for k, v in values.items())


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _number(value: float | None, empty: str = "") -> str:
    return empty if value is None else f"{value:.4f}"
