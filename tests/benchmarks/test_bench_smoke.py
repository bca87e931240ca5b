"""`lehnz bench --quick --soak`: the real command end to end on tiny sizes (a smoke test, not a timing).

It starts its own embedded servers, api, worker, floor server and load generator, so the test
runs it as a child process in its own session and, whatever happens, ends that session's
processes by their group id.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = """# Benchmarks

<!-- quality:start -->
quality text that must survive
<!-- quality:end -->

<!-- speed:start -->
(old speed text)
<!-- speed:end -->

## Data credits
"""


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _run_bench(tmp_path: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "bench", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        return subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the bench stops its children and servers on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_bench_and_soak_write_every_section_with_positive_numbers(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    docs = tmp_path / "benchmarks.md"
    docs.write_text(DOC)
    result = _run_bench(
        tmp_path, "--quick", "--soak", "3", "--out", str(out), "--write-docs", "--docs", str(docs),
        timeout_s=200,
    )
    assert result.returncode == 0, result.stdout[-4000:]

    data = json.loads(out.read_text())
    speed, soak = data["speed"], data["soak"]
    assert speed["meta"]["machine"]["nproc"] >= 1 and "lehnz bench" in speed["meta"]["command"]
    assert _positive(speed["preload"]["events_copy_per_s"])

    train = speed["train"]
    assert _positive(train["duration_s"]) and _positive(train["parts_s"][train["personal_model"]]) and train["version"]
    assert _positive(speed["floors"]["als_alone"]["seconds"])
    assert _positive(speed["floors"]["numpy_topk"]["ms"]["p99"])
    for label in ("loaded", "unloaded"):
        block = speed["recommend"][label]
        assert _positive(speed["floors"][f"bare_json_c{block['concurrency']}"]["ok_rps"])
        for name in ("personalized", "similar", "session_based", "frequently-bought-together",
                     "personalized+filters", "frequently-bought-together+filters", "popular", "trending"):
            variant = block["variants"][name]
            assert variant["errors"] == 0, (label, name, variant["statuses"])
            assert _positive(variant["ok_rps"]), (label, name)
            assert _positive(variant["client_ms"]["p99"]) and _positive(variant["server_ms"]["p99"]), (label, name)

    ingest = speed["ingest"]
    for batch in ("1", "100", "1000"):
        row = ingest["batches"][batch]
        assert _positive(row["accepted_events_per_s"]) and _positive(row["floor_events_per_s"]), batch
        assert _positive(row["persisted_events_per_s"]) and _positive(row["latency_ms"]["p99"]), batch
        assert row["all_accepted_stored"], (batch, row["queued_events"], row["persisted_events"])
    assert _positive(ingest["copy_floor"]["rows_per_s"])

    memory = speed["memory"]
    assert _positive(memory["api_rss_mb_model_loaded"]) and _positive(memory["worker_rss_mb_end"])
    assert speed["goals"] and all(g["met"] in (True, False) for g in speed["goals"])

    assert soak["requests"] > 0 and soak["errors_non_429"] == 0, soak["statuses"]
    assert soak["events"]["accepted"] > 0 and soak["events"]["equal"], soak["events"]
    assert _positive(soak["latency_ms"]["recommend"]["p99"])
    assert soak["rss"]["api"]["series"]["rss_mb"] and soak["over_time"]["p99_ms"]
    assert soak["goals"]

    for png in ("latency.png", "soak.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = docs.read_text()
    assert "quality text that must survive" in text and "## Data credits" in text
    assert "(old speed text)" not in text
    region = text[text.index("<!-- speed:start -->"): text.index("<!-- speed:end -->")]
    assert "### Goals" in region and "<!-- speed:soak:start -->" in region and "### Soak" in region
