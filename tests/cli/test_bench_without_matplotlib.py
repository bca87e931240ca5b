"""Issue 13: `lehnz bench` after a plain `pip install -e .` (no matplotlib, which is the `bench`
extra) writes its results and skips the plots, instead of dying after minutes of measuring."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The command as installed without the extra: importing matplotlib fails.
WITHOUT_MATPLOTLIB = ["-c", "import sys; sys.modules['matplotlib'] = None; from app.cli import main; main()"]


def bench(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, *WITHOUT_MATPLOTLIB, "bench", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "200"})
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        if proc.poll() is None:  # the bench stops its children and servers on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_bench_refuses_write_docs_at_once_without_matplotlib(tmp_path: Path) -> None:
    started = time.monotonic()
    refused = bench("--quick", "--write-docs", "--out", str(tmp_path / "speed.json"),
                    "--docs", str(tmp_path / "benchmarks.md"), timeout_s=60)
    assert refused.returncode == 2
    [line] = [line for line in refused.stderr.splitlines() if line.strip()]
    assert "need matplotlib: pip install -e '.[bench]'" in line and "Traceback" not in refused.stderr
    assert time.monotonic() - started < 30, "it measured before refusing"
    assert not (tmp_path / "speed.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_without_matplotlib_writes_its_results_and_skips_the_plots(tmp_path: Path) -> None:
    """The shortest run that goes through a whole measurement to the report (a 2 s soak: servers,
    orgs, training, traffic, counting); the smoke test runs the full quick bench with the plots."""
    out = tmp_path / "speed.json"
    result = bench("--quick", "--soak-only", "--soak", "2", "--out", str(out), timeout_s=260)
    assert result.returncode == 0, result.stderr[-4000:]
    first = result.stderr.splitlines()[0]
    assert first == ("note: matplotlib is not installed (pip install -e '.[bench]'): the results JSON is "
                     "written, the PNG plots are skipped"), first
    soak = json.loads(out.read_text())["soak"]
    assert soak["requests"] > 0 and soak["goals"]
    assert not list(tmp_path.glob("*.png"))
    assert f"results: {out}" in result.stdout
