"""The published report (docs/benchmarks.md's quality region): the summary of what a shop gets
at the data's real dates and shifted, and which run produced each protocol's numbers after a
partial (--only) run is merged into the last report. Small hand-made reports: no data, fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.eval_command import _merge
from benchmarks.quality import report

TEXTBOOK = "implicit ALS (direct, textbook: 64 factors, reg 0.05, confidence 1 + 20 x, 15 iterations)"
MACHINE = {"cpu": "test cpu", "cores": 2, "ram_gib": 1.0, "os": "Linux", "python": "3.11",
           "libraries": {"numpy": "2"}, "load_average_at_start": [0.0, 0.0, 0.0]}


def row(name: str, kind: str, ndcg: float) -> dict[str, Any]:
    return {"name": name, "kind": kind, "note": "", "metrics": {"ndcg@10": ndcg}}


def e2e(key: str, real: str, numbers: dict[str, float], run: dict[str, str]) -> dict[str, Any]:
    rows = [row(f"{strategy}, end to end, {label}", "strategy", numbers[f"{strategy} {label}"])
            for label in (real, "shifted") for strategy in ("personalized", "popular")]
    rows.append(row(TEXTBOOK, "baseline", numbers["textbook"]))
    return {"key": key, "title": key, "description": "text", "columns": ["ndcg@10"], "rows": rows,
            "facts": {f"personalized_model ({real})": "ease(lambda=400)", "personalized_model (shifted)": "als(K=1)"},
            "goals": [], "seconds": 1.0, "run": run}


def test_the_summary_gives_each_dataset_at_real_dates_and_shifted_with_its_path_and_run() -> None:
    run = {"command": "lehnz eval --only e2e --write-docs", "generated_at": "2026-12-07 08:30 UTC"}
    found = {
        "e2e-movielens-loo": e2e("e2e-movielens-loo", "1997-98 dates", {
            "personalized 1997-98 dates": 0.08, "popular 1997-98 dates": 0.04,
            "personalized shifted": 0.06, "popular shifted": 0.04, "textbook": 0.05}, run),
        "e2e-retail-next-basket": e2e("e2e-retail-next-basket", "2010-11 dates", {
            "personalized 2010-11 dates": 0.1, "popular 2010-11 dates": 0.05,
            "personalized shifted": 0.1, "popular shifted": 0.05, "textbook": 0.08}, run),
    }
    text = report.markdown({"machine": MACHINE, "generated_at": run["generated_at"], "command": run["command"],
                            "complete": False, "total_seconds": 1.0, "protocols": found})
    summary = text[text.index("### Summary"):text.index("### Goals")]
    lines = [line for line in summary.splitlines() if line.startswith(("| MovieLens", "| Online"))]
    assert len(lines) == 4, summary
    first = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert first[:7] == ["MovieLens 100K, leave-last-one-out", "1997-98 dates", "0.0800", "0.0400", "2.00x",
                         "0.0500", "1.60x"]
    assert first[7] == "ease(lambda=400)" and "over HTTP" in first[8] and first[9] == run["generated_at"]
    shifted = [cell.strip() for cell in lines[1].strip("|").split("|")]
    assert shifted[1] == "shifted" and shifted[2] == "0.0600" and shifted[7] == "als(K=1)"
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["2010-11 dates", "shifted"]
    assert f"Run: {run['generated_at']}, `{run['command']}`." in text


def test_a_partial_run_keeps_the_run_that_produced_each_older_protocol(tmp_path: Path) -> None:
    target = tmp_path / "quality.json"
    older = {"key": "movielens-gorse", "rows": []}
    target.write_text(json.dumps({"command": "lehnz eval --write-docs", "generated_at": "2026-12-01 10:00 UTC",
                                  "quick": False, "protocols": {"movielens-gorse": older}}))
    fresh_run = {"command": "lehnz eval --only e2e", "generated_at": "2026-12-07 08:30 UTC"}
    fresh = {**fresh_run, "quick": False, "complete": False,
             "protocols": {"e2e-movielens-loo": {"key": "e2e-movielens-loo", "rows": [], "run": fresh_run}}}
    merged = _merge(target, fresh)
    assert merged["protocols"]["movielens-gorse"]["run"] == {"command": "lehnz eval --write-docs",
                                                             "generated_at": "2026-12-01 10:00 UTC"}
    assert merged["protocols"]["e2e-movielens-loo"]["run"] == fresh_run
    assert merged["command"] == fresh_run["command"] and not merged["complete"]
