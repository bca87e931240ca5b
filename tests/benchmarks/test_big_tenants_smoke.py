"""`lehnz bench --train-scale --quick` and `lehnz bench --big-catalog --quick`: the real commands
end to end on tiny sizes (smoke tests, not timings), each writing its JSON and its docs region."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.speed.train_scale import peak_part
from tests.benchmarks.test_bench_smoke import _positive, _run_bench

DOC = """# Benchmarks

<!-- speed:start -->
speed text that must survive
<!-- speed:end -->

<!-- train-scale:start -->
(old train-scale text)
<!-- train-scale:end -->

<!-- big-catalog:start -->
(old big-catalog text)
<!-- big-catalog:end -->
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_train_scale_trains_every_size_and_writes_its_table(tmp_path: Path) -> None:
    out, docs = tmp_path / "train_scale.json", tmp_path / "benchmarks.md"
    docs.write_text(DOC)
    result = _run_bench(tmp_path, "--train-scale", "--quick", "--out", str(out), "--write-docs", "--docs", str(docs),
                        timeout_s=260)
    assert result.returncode == 0, result.stdout[-4000:]
    scale = json.loads(out.read_text())["train_scale"]
    assert [s["events"] for s in scale["sizes"]] == [3_000, 9_000]
    for size in scale["sizes"]:
        train = size["train"]
        assert "error" not in train, train
        assert train["interactions"] == size["events"] and _positive(train["duration_ms"])
        assert _positive(train["timings_s"]["load"]) and _positive(train["memory_mb"]["peak_rss"])
        assert _positive(train["memory_mb"]["estimated"]) and train["window"]["events"] == size["events"]
        # The peak as each part ended: from the load on, never falling, and one part set it.
        parts = [part for part, _ in train["memory_mb"]["peak_rss_after"]]
        peaks = [mb for _, mb in train["memory_mb"]["peak_rss_after"]]
        assert parts[0] == "load" and parts[-1] == "validate" and {"matrix", "knn", "content"} <= set(parts)
        assert peaks == sorted(peaks) and peak_part(train["memory_mb"]) in parts
        assert _positive(size["preload"]["events_per_s"])
    assert any(g["goal"].startswith("peak RSS") for g in scale["goals"])
    assert (tmp_path / "train_scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = docs.read_text()
    assert "speed text that must survive" in text and "(old train-scale text)" not in text
    assert "| 9,000 |" in text[text.index("<!-- train-scale:start -->"): text.index("<!-- train-scale:end -->")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_big_catalog_asks_every_strategy_and_swaps_a_second_version(tmp_path: Path) -> None:
    out, docs = tmp_path / "big_catalog.json", tmp_path / "benchmarks.md"
    docs.write_text(DOC)
    result = _run_bench(tmp_path, "--big-catalog", "--quick", "--out", str(out), "--write-docs", "--docs", str(docs),
                        timeout_s=260)
    assert result.returncode == 0, result.stdout[-4000:]
    catalog = json.loads(out.read_text())["big_catalog"]
    variants = catalog["recommend"]["variants"]
    assert len(variants) == 14 + 4
    for name, phase in variants.items():
        assert phase["errors"] == 0 and _positive(phase["server_ms"]["p99"]), (name, phase["statuses"])
    first, second = catalog["trains"]
    assert first["version"] != second["version"] and _positive(second["serving_after_s"])
    assert _positive(catalog["memory"]["api_rss_mb_model_loaded"])
    first_filtered = catalog["first_filtered_request"]
    assert _positive(first_filtered["client_ms"]) and first_filtered["filters"]
    text = docs.read_text()
    assert "(old big-catalog text)" not in text and "| popular |" in text and "First filtered request" in text
