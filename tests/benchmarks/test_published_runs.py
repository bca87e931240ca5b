"""What a published benchmark says about the run behind it: the settings it ran under, and no
goal row for a part that did not run."""

from __future__ import annotations

import sys

import pytest

from benchmarks.bench_command import _command_line
from benchmarks.speed.train_scale import goals


def test_the_recorded_command_names_the_lehnz_settings_it_ran_under(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lehnz", "bench", "--train-scale", "--scale-sizes", "1000000"])
    monkeypatch.setenv("LEHNZ_MODEL_SEARCH", "false")
    monkeypatch.setenv("LEHNZ_DATABASE_URL", "postgresql://user:pw@db/lehnz")  # never published
    monkeypatch.setenv("LEHNZ_DATA_DIR", "/home/someone/lehnz")
    command = _command_line()
    assert command.startswith("LEHNZ_MODEL_SEARCH=false ") and command.endswith(
        "lehnz bench --train-scale --scale-sizes 1000000")
    assert "DATABASE_URL" not in command and "DATA_DIR" not in command


def _size(events: int, seconds: float, *, search_s: float | None) -> dict:
    timings = {"load": 0.1 * seconds, "als": 0.3 * seconds}
    if search_s is not None:
        timings["search"] = search_s
    return {"events": events, "train": {"duration_ms": seconds * 1000, "timings_s": timings,
                                        "memory_mb": {"peak_rss": 100.0}},
            "als_alone": {"seconds": seconds / 2.5}}


def test_train_scale_reports_with_search_rows_only_when_a_search_ran() -> None:
    without = goals([_size(1_000_000, 50.0, search_s=None), _size(5_000_000, 190.0, search_s=None)])
    contexts = [g["context"] for g in without]
    assert not any("with the model search" in c for c in contexts)
    assert any("without the model search" in c for c in contexts)
    searched = goals([_size(1_000_000, 80.0, search_s=30.0), _size(5_000_000, 300.0, search_s=110.0)])
    assert any(g["context"].endswith("with the model search") for g in searched)
