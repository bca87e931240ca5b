"""The type checker is part of the suite: `mypy app workers` (configured in pyproject.toml) must
report no error, so the README's `pytest` (what CI runs) fails on a type error like on any bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


# A cold run (no .mypy_cache, as in CI) checks every imported stub on a slow shared machine.
@pytest.mark.timeout(600)
def test_mypy_reports_no_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "app", "workers"],
        cwd=REPO_ROOT,
        check=False,  # the exit code is the assertion, with mypy's output as its message
        capture_output=True,
        text=True,
        timeout=590,
    )
    assert result.returncode == 0, f"mypy app workers:\n{result.stdout}{result.stderr}"
