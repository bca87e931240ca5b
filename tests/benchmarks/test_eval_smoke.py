"""`lehnz eval --quick` end to end through the real command: every protocol, strategy and
baseline is reported, metrics are probabilities, and they make sense (the server beats chance
and popularity where it must)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from benchmarks.eval_command import DEFAULT_DATA, PROTOCOLS
from benchmarks.quality import report

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="the shared datasets are not available")

EXPECTED_ROWS = {
    "movielens-gorse": {"personalized", "popular", "implicit ALS (direct)", "random", "gorse WRMF (published)"},
    "movielens-temporal": {"personalized", "popular", "implicit ALS (direct)", "random"},
    "retail-fbt": {"frequently-bought-together", "popular", "co-occurrence counts (raw)"},
    "retail-session": {"session_based", "popular", "co-occurrence counts of the last item (raw)"},
}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval") / "quality.json"
    result = CliRunner().invoke(cli, ["eval", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def rows(report_: dict[str, Any], protocol: str) -> dict[str, dict[str, float | None]]:
    return {row["name"]: row["metrics"] for row in report_["protocols"][protocol]["rows"]}


def test_quick_eval_reports_every_protocol_and_method(quick_report: dict[str, Any]) -> None:
    assert set(quick_report["protocols"]) == set(PROTOCOLS)
    assert quick_report["quick"] and not quick_report["complete"]
    for protocol, names in EXPECTED_ROWS.items():
        assert names <= set(rows(quick_report, protocol)), protocol
    assert any(name.startswith("item-kNN") for name in rows(quick_report, "movielens-temporal"))
    assert any(name.startswith("EASE") for name in rows(quick_report, "movielens-temporal"))
    tuning = quick_report["protocols"]["tuning"]
    assert tuning["facts"]["chosen"] and any(row["note"] == "winner" for row in tuning["rows"])


def test_every_measured_metric_is_a_probability(quick_report: dict[str, Any]) -> None:
    for protocol in quick_report["protocols"].values():
        for row in protocol["rows"]:
            for name, value in row["metrics"].items():
                if value is None:
                    assert row["kind"] == "reference", (protocol["key"], row["name"], name)
                    continue
                assert 0.0 <= value <= 1.0, (protocol["key"], row["name"], name, value)


def test_the_server_beats_chance_and_popularity_on_the_quick_slice(quick_report: dict[str, Any]) -> None:
    for protocol in ("movielens-gorse", "movielens-temporal"):
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
