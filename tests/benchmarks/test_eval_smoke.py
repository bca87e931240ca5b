"""`lehnz eval --quick` through the real command: every in-process protocol, strategy and
baseline is reported, metrics are probabilities, and they make sense (the server beats chance
and popularity where it must); the end-to-end protocol drives a real `lehnz serve` over HTTP
and gets the in-process answers back. Slow on a busy machine (minutes): every protocol trains
through train_models with the model search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.ml.personalization import FAMILIES
from benchmarks.eval_command import DEFAULT_DATA, PROTOCOLS
from benchmarks.quality import report

pytestmark = [
    pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="the shared datasets are not available"),
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

# The tuning protocol (a hyperparameter grid over both datasets, the slowest by far) is left to
# `lehnz eval --only tuning`; every other in-process protocol runs here.
IN_PROCESS = [name for name in PROTOCOLS if name not in ("e2e", "tuning")]
BASELINES = {"popular", "random"}
EXPECTED_ROWS = {
    "movielens-gorse": {"personalized", *BASELINES, "gorse WRMF (published)"},
    "movielens-temporal": {"personalized", *BASELINES},
    "movielens-loo": {"personalized", *BASELINES},
    "retail-next-basket": {"personalized", *BASELINES},
    "retail-fbt": {"frequently-bought-together", "popular", "co-occurrence counts (raw)"},
    "retail-session": {"session_based", "popular", "co-occurrence counts of the last item (raw)"},
}
PERSONALIZED = ("movielens-gorse", "movielens-temporal", "movielens-loo", "retail-next-basket")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval") / "quality.json"
    result = CliRunner().invoke(cli, ["eval", "--quick", "--only", ",".join(IN_PROCESS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def rows(report_: dict[str, Any], protocol: str) -> dict[str, dict[str, float | None]]:
    return {row["name"]: row["metrics"] for row in report_["protocols"][protocol]["rows"]}


def test_quick_eval_reports_every_protocol_and_method(quick_report: dict[str, Any]) -> None:
    assert set(quick_report["protocols"]) == set(IN_PROCESS)
    assert quick_report["quick"] and not quick_report["complete"]
    for protocol, names in EXPECTED_ROWS.items():
        assert names <= set(rows(quick_report, protocol)), protocol
    for protocol in PERSONALIZED:
        found = set(rows(quick_report, protocol))
        for prefix in ("implicit ALS (direct, tuned", "implicit ALS (direct, textbook", "item-kNN", "EASE"):
            assert any(name.startswith(prefix) for name in found), (protocol, prefix)
        goals = [goal["text"] for goal in quick_report["protocols"][protocol]["goals"]]
        assert "personalized NDCG@10 >= 1.5x popular" in goals, protocol


def test_the_search_chose_and_the_clock_did_not_matter(quick_report: dict[str, Any]) -> None:
    """Every personalized protocol reports what the model search chose; on leave-last-one-out
    the same history trained at the wall clock answers exactly like at its newest event + 1 h."""
    for protocol in PERSONALIZED[1:]:
        facts = quick_report["protocols"][protocol]["facts"]
        assert facts["personalized_model"].split("(")[0] in FAMILIES, protocol
        assert "holdout NDCG@10" in facts["model_search"], protocol
    loo = quick_report["protocols"]["movielens-loo"]
    clock = next(goal for goal in loo["goals"] if goal["text"].startswith("`now`"))
    assert clock["met"], clock["detail"]
    assert {"with search (now = newest + 1 h)", "plain (refit the winner)"} <= set(loo["facts"]["train_seconds"])


def test_every_measured_metric_is_a_probability(quick_report: dict[str, Any]) -> None:
    for protocol in quick_report["protocols"].values():
        for row in protocol["rows"]:
            for name, value in row["metrics"].items():
                if value is None:
                    assert row["kind"] == "reference", (protocol["key"], row["name"], name)
                    continue
                assert 0.0 <= value <= 1.0, (protocol["key"], row["name"], name, value)


def test_the_server_beats_chance_and_popularity_on_the_quick_slice(quick_report: dict[str, Any]) -> None:
    for protocol in ("movielens-gorse", "movielens-temporal", "retail-next-basket"):
        found = rows(quick_report, protocol)
        assert found["personalized"]["ndcg@10"] > 2 * found["random"]["ndcg@10"], protocol
        assert found["personalized"]["ndcg@10"] > found["popular"]["ndcg@10"], protocol
    fbt = rows(quick_report, "retail-fbt")
    assert fbt["frequently-bought-together"]["hr@10"] > fbt["popular"]["hr@10"]
    session = rows(quick_report, "retail-session")
    assert session["session_based"]["hr@10"] > session["popular"]["hr@10"]


def test_the_report_renders_into_the_docs_region_only(quick_report: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\n{report.START}\nSTALE-REGION\n{report.END}\n\n<!-- speed:start -->\nfast\n"
                    "<!-- speed:end -->\n")
    report.write_region(page, report.markdown(quick_report))
    text = page.read_text()
    assert "STALE-REGION" not in text and "<!-- speed:start -->\nfast\n<!-- speed:end -->" in text
    assert text.count(report.START) == 1 and "### Metric definitions" in text


def plain(output: str) -> str:
    """typer boxes and wraps error messages; compare the words only."""
    return " ".join(output.replace("│", " ").split())


def test_quick_numbers_are_never_published() -> None:
    result = CliRunner().invoke(cli, ["eval", "--quick", "--write-docs", "--only", "movielens-temporal"])
    assert result.exit_code != 0 and "never published" in plain(result.output)


def test_an_unknown_protocol_is_refused() -> None:
    result = CliRunner().invoke(cli, ["eval", "--only", "movielens,nope"])
    assert result.exit_code != 0 and "unknown protocol" in plain(result.output)


def test_end_to_end_quick_answers_over_http_as_in_process(tmp_path: Path) -> None:
    """A real `lehnz serve`: both MovieLens loads (real dates, shifted) trained by its worker and
    answered over HTTP. The two datings and the in-process path answer alike: within noise, and
    exactly when their model searches chose the same model (the search's holdout breaks ties in
    time by the order the events were loaded in, which the database does not keep, so on 40 users
    a near tie can go either way). The model status's quality is recorded, and the server and its
    data dir are gone afterwards."""
    before = set(Path("/tmp").glob("lehnz-e2e-*"))
    out = tmp_path / "quality.json"
    result = CliRunner().invoke(cli, ["eval", "--quick", "--only", "e2e", "--out", str(out)])
    assert result.exit_code == 0, result.output
    protocol = json.loads(out.read_text())["protocols"]["e2e-movielens-loo"]
    found = rows({"protocols": {"e2e": protocol}}, "e2e")
    facts = protocol["facts"]
    for label in ("1997-98 dates", "shifted"):
        assert f"personalized, end to end, {label}" in found
        assert facts[f"quality_reported ({label})"]["chosen"]["model"] in FAMILIES
        assert facts[f"loaded ({label})"]["events"] > 0
    goals = {goal["text"]: goal for goal in protocol["goals"]}
    for text in ("in-process (train_models + answer) matches end to end (shifted dates)",
                 "end to end: history at its 1997-98 dates within noise of the same history shifted to an hour ago"):
        assert goals[text]["met"], goals[text]["detail"]
        assert "same top 10 for" in goals[text]["detail"]
    paths = {"personalized, end to end, 1997-98 dates": facts["personalized_model (1997-98 dates)"],
             "personalized, in-process": facts["in_process_model"]}
    for name, model in paths.items():  # the same family and settings: the same answers
        if model == facts["personalized_model (shifted)"]:
            assert found[name] == found["personalized, end to end, shifted"], name
    assert set(Path("/tmp").glob("lehnz-e2e-*")) == before, "the server's data dir was left behind"
