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
ORDER = ["movielens-gorse", "movielens-temporal", "movielens-loo", "retail-fbt", "retail-session",
         "retail-next-basket", "e2e-movielens-loo", "e2e-retail-next-basket", "tuning"]
# Which code produced a protocol's numbers (docs/benchmarks.md says it for every number).
IN_PROCESS = "in-process: `train_models` + `answer`"
PATHS = {
    "e2e-movielens-loo": "end to end: `lehnz serve` over HTTP",
    "e2e-retail-next-basket": "end to end: `lehnz serve` over HTTP",
    "tuning": "in-process: the model search's `fit` + `batch_scores` on validation splits; pairs and K: "
              "`train_models` + `answer`",
}

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
        *_runs(protocols),
        ("Every number says which code produced it (the *path* column below, and each protocol's text): "
         "**in-process** = the server's training function (`workers.train_process.train_models`, as the "
         "worker's training child runs it, model search included) and its request function "
         "(`app.recommend.answer.answer`, behind `POST /v1/recommend`) called in one process; **end to end** = "
         "a fresh `lehnz serve` subprocess loaded, trained and asked over HTTP through the public API. "
         "Baselines are computed in the eval process from the same training matrix."),
        "",
        *_headline(report),
        "### Goals",
        "",
        "| protocol | path | goal | met | measured |",
        "|---|---|---|---|---|",
    ]
    for protocol in protocols:
        path = PATHS.get(protocol["key"], IN_PROCESS)
        for goal in protocol["goals"]:
            parts.append(f"| {protocol['key']} | {path} | {goal['text']} | {'yes' if goal['met'] else '**no**'} | "
                         f"{goal['detail']} |")
    parts += ["", ("A difference smaller than about twice its standard error is a tie: the query sample alone "
                   "could reverse it."), "", CHANGES]
    gaps = [(p, g) for p in protocols for g in p["goals"] if not g["met"] and g.get("closing")]
    if gaps:
        parts += ["", "**Gaps and what would close them.**", ""]
        parts += [f"- *{g['text']}* ({p['key']}): {g['closing']}" for p, g in gaps]
    for protocol in protocols:
        parts += ["", f"### {protocol['title']}", "", f"Path: {PATHS.get(protocol['key'], IN_PROCESS)}."
                  + _run_of(protocol), "", protocol["description"].strip(), ""]
        if protocol["key"] == "tuning":
            parts += _tuning(protocol)
        else:
            parts += _table(protocol["columns"], protocol["rows"])
            parts += ["", _facts(protocol["facts"]) + f" Time: {protocol['seconds']:.0f} s."]
    parts += ["", "### Metric definitions", "", METRIC_DEFINITIONS]
    return "\n".join(parts)


CHANGES = """\
**What changed since the previous published report, and why.** ALS can now weigh an interaction
by its presence (`als_presence`: confidence 1 + alpha (1 + log1p w), so a months-old interaction
is still a full "yes"; with the linear 1 + alpha w, the 30-day decay leaves an old history close
to unobserved). The per-organisation search tries a 64-factor presence ALS, and on catalogs EASE
fits it is the first search's incumbent, kept unless a challenger beats it by two paired
standard errors on the latest-interaction holdout: it beats EASE on both MovieLens validation
splits (tuning protocol), while that holdout cannot tell the two apart. So MovieLens is now
served by presence ALS instead of EASE: Gorse NDCG@10 0.4403 -> 0.4469 (the one goal the
previous report missed, now met), temporal 0.2053 -> 0.2056, leave-last-one-out 0.0751 ->
0.0757, in-process and end to end alike. On catalogs EASE fits, the linear 64-factor ALS point
(it never won on MovieLens) is no longer tried, so the search costs what it did (2.67x a plain
train). Online Retail (too big for EASE) still picks the linear 64-factor ALS; its search tries
one candidate more. The tuning sweep has presence as an ALS coordinate."""

# The summary at the top: each dataset end to end at its real dates and shifted to the present.
HEADLINE = {"e2e-movielens-loo": "MovieLens 100K, leave-last-one-out", "e2e-retail-next-basket":
            "Online Retail, next basket"}
TEXTBOOK = "implicit ALS (direct, textbook"


def _headline(report: dict[str, Any]) -> list[str]:
    """personalized vs popular vs implicit's ALS used directly at the textbook settings, per
    dataset and dating, from the end-to-end protocols (the baseline row is the in-process one
    on the same split: a matrix scorer has no dates)."""
    found = [report["protocols"][key] for key in HEADLINE if key in report["protocols"]]
    if not found:
        return []
    lines = ["### Summary: what a shop gets, at the data's real dates and shifted to the present", "",
             ("| dataset | history | personalized NDCG@10 | popular NDCG@10 | personalized / popular | "
              "implicit ALS direct, textbook NDCG@10 | personalized / textbook ALS | model the server chose | "
              "path | run |"), "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for protocol in found:
        rows = {row["name"]: row["metrics"] for row in protocol["rows"]}
        textbook = next((m.get("ndcg@10") for name, m in rows.items() if name.startswith(TEXTBOOK)), None)
        labels = [name.removeprefix("personalized, end to end, ") for name in rows
                  if name.startswith("personalized, end to end, ")]
        for label in labels:
            ours = rows[f"personalized, end to end, {label}"]["ndcg@10"]
            popular = rows[f"popular, end to end, {label}"]["ndcg@10"]
            model = protocol["facts"].get(f"personalized_model ({label})", "")
            lines.append(
                f"| {HEADLINE[protocol['key']]} | {label} | {_number(ours)} | {_number(popular)} | "
                f"{_ratio(ours, popular)} | {_number(textbook)} | {_ratio(ours, textbook)} | {model} | "
                f"{PATHS[protocol['key']]} | {_run_time(protocol)} |")
    lines += ["", ("Standard errors, HR@10 and every other baseline are in each protocol's section below; the "
                   "in-process rows of the same splits (`train_models` + `answer`) are there too."), ""]
    return lines


def _runs(protocols: list[dict[str, Any]]) -> list[str]:
    """Which run produced which protocols (a partial run is merged into the last report)."""
    runs: dict[tuple[str, str], list[str]] = {}
    for protocol in protocols:
        run = protocol.get("run") or {}
        runs.setdefault((run.get("generated_at", "?"), run.get("command", "?")), []).append(protocol["key"])
    if len(runs) < 2:
        return []
    lines = ["The numbers below come from these runs:", ""]
    lines += [f"- {when}, `{command}`: {', '.join(keys)}" for (when, command), keys in sorted(runs.items())]
    return [*lines, ""]


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return "—" if not numerator or not denominator else f"{numerator / denominator:.2f}x"


def _run_label(protocol: dict[str, Any]) -> str:
    run = protocol.get("run") or {}
    return f"{run.get('generated_at', '?')}, `{run.get('command', '?')}`" if run else "?"


def _run_time(protocol: dict[str, Any]) -> str:
    return str((protocol.get("run") or {}).get("generated_at", "?"))


def _run_of(protocol: dict[str, Any]) -> str:
    run = protocol.get("run")
    return f" Run: {_run_label(protocol)}." if run else ""


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
        lines.append(f"- server ALS family `{name}`: {values}")
    lines.append(f"- server EASE family `ease_lambda` (with the ALS winner's decay): {grid['ease_lambda']}")
    lines.append(f"- server kNN family `knn_neighbours`: {grid['knn']}")
    lines.append(f"- decay half-life (days), for each family's winner and for the server's ALS at the tuned "
                 f"baseline's settings: {grid['decay_half_life_days']}")
    for name, values in grid["baseline_als"].items():
        lines.append(f"- baseline implicit ALS `{name}` (from the textbook settings; pairs swept together): "
                     f"{values}")
    lines.append(f"- baselines: EASE lambda {grid['baseline_ease']}, item-kNN K {grid['baseline_knn']}")
    for name, values in grid["pairs"].items():
        lines.append(f"- pairs `{name}`: {values}")
    lines.append(f"- `knn_neighbours` (K): {grid['knn_neighbours']}; the smallest K within 1% of the best "
                 "session_based validation score wins (memory and training time grow with K)")
    lines += ["", (f"Pair tables and K (no per-org search chooses them): winners `{_inline(facts['chosen'])}`, "
                   f"TrainParams defaults `{_inline(facts['defaults'])}`. Best configuration with any decay "
                   f"half-life: {_inline(facts.get('decay_winners', {}))}.")]
    for dataset in ("movielens", "retail"):
        winners = facts.get(f"{dataset}_family_winners")
        if winners:
            described = "; ".join(f"{family}: {_inline(config)}" for family, config in winners.items())
            lines.append(f"{dataset} family winners: {described}. The per-org search's candidates there: "
                         f"{', '.join(facts[f'{dataset}_search_candidates'])}.")
    baselines = facts.get("baseline_winners", {})
    lines.append("Baseline winners: " + "; ".join(f"{name}: {_plain(value)}" for name, value in baselines.items())
                 + f". Time: {protocol['seconds']:.0f} s.")
    lines += [
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
        if key == "path" or key.startswith("quality_reported"):  # said above / kept in the JSON only
            continue
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
