"""The container test's image build, started in the background when the pytest session has
collected that test (tests/ops/conftest.py), so a cold build (minutes: debootstrap, apt, PyPI)
runs while the rest of the suite does; the test waits for it.

The build is `python -m tests.ops.images` in a process group of its own; its output and one log
per image go to a temporary directory, kept when the build fails (its tail is in the failure)
and removed when it succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from tests.ops.images import EXIT_FILE, ROOT, log_tail

# Under pytest-xdist: the directory of the controller's build (tests/conftest.py), inherited by
# the workers.
SHARED_BUILD_DIR = "LEHNZ_TEST_IMAGE_BUILD_DIR"
CONTAINER_TESTS = "tests/ops/test_container.py"  # the only file whose tests need the images
OUTPUT_FILE, TAGS_FILE = "build.out", "tags.json"  # in the build's directory
BUILD_TIMEOUT_S = float(os.environ.get("LEHNZ_TEST_IMAGE_BUILD_TIMEOUT_S", "1500"))
NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


class BackgroundBuild:
    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="lehnz-image-build-"))
        self.output_path = self.log_dir / OUTPUT_FILE
        self._output: IO[bytes] = open(self.output_path, "wb")  # noqa: SIM115 - closed in finish()
        self._tags_path = self.log_dir / TAGS_FILE
        self._tags_file: IO[bytes] = open(self._tags_path, "wb")  # noqa: SIM115 - closed in finish()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            # Niced: the tests running meanwhile keep their share of the CPU (what runs inside
            # dockerd's build containers is not ours to nice).
            [*NICE, sys.executable, "-m", "tests.ops.images", "--log-dir", str(self.log_dir)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._tags_file,
            stderr=self._output,
            start_new_session=True,
        )
        self._tags: dict[str, str] | None = None
        self._failed = False  # wait() reported it

    def wait(self, timeout: float = BUILD_TIMEOUT_S) -> dict[str, str]:
        """The image tags, once the build has finished; an AssertionError with the build's log
        tail if it failed or is still running after `timeout` seconds from its start."""
        if self._tags is not None:
            return self._tags
        remaining = max(timeout - (time.monotonic() - self.started), 1.0)
        try:
            code = self.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.stop()
            self._failed = True
            raise AssertionError(
                f"the image build did not finish within {timeout:.0f} s "
                f"(LEHNZ_TEST_IMAGE_BUILD_TIMEOUT_S); logs in {self.log_dir}:\n{self._tail()}"
            ) from None
        if code != 0:
            self._failed = True
            raise AssertionError(
                f"the image build failed (exit {code}); logs in {self.log_dir}:\n{self._tail()}"
            )
        self._tags = json.loads(self._tags_path.read_text())
        took = time.monotonic() - self.started
        print(f"container images ready after {took:.0f} s: {self._tags}", file=sys.stderr)
        return self._tags

    def _tail(self) -> str:
        return _build_log_tail(self.log_dir)

    def stop(self) -> None:
        """End the build if it still runs (its whole process group: docker clients, debootstrap)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def finish(self) -> None:
        """At the end of the session: stop it, and keep the logs only if it failed."""
        unfinished = self.process.poll() is None  # the session ended before it needed the images
        self.stop()
        self._output.close()
        self._tags_file.close()
        if not self._failed and (unfinished or self.process.returncode == 0):
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            print(f"image build logs kept in {self.log_dir}", file=sys.stderr)


def _build_log_tail(log_dir: Path) -> str:
    tails = [f"--- {OUTPUT_FILE}:\n{log_tail(log_dir / OUTPUT_FILE)}"]
    # The image whose log changed last is the one that was building when it stopped.
    logs = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if logs:
        tails.append(f"--- {logs[-1].name}:\n{log_tail(logs[-1], 40)}")
    return "\n".join(tails)


def wait_for_build(log_dir: Path, timeout: float = BUILD_TIMEOUT_S) -> dict[str, str]:
    """The tags of a build another process started in `log_dir` (under pytest-xdist the
    controller builds, and the worker that runs the container tests waits here)."""
    deadline = time.monotonic() + timeout
    exit_file = log_dir / EXIT_FILE
    while not exit_file.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"the image build did not finish within {timeout:.0f} s "
                                 f"(LEHNZ_TEST_IMAGE_BUILD_TIMEOUT_S); logs in {log_dir}:\n{_build_log_tail(log_dir)}")
        time.sleep(1.0)
    code = exit_file.read_text().strip()
    if code != "0":
        raise AssertionError(f"the image build failed (exit {code}); logs in {log_dir}:\n{_build_log_tail(log_dir)}")
    tags: dict[str, str] = json.loads((log_dir / TAGS_FILE).read_text())
    return tags
