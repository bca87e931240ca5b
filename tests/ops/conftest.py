"""tests/ops: the container test's images are built in the background from the moment the
session has collected a test that needs them (tests/ops/images/background.py), and the file
with the tests that need them runs near the end, so that the build has most of the suite's
time to finish in.

Under pytest-xdist every worker collects every test, so the controller builds instead (one
build, living as long as the session; tests/conftest.py, since the controller loads no
conftest below tests/) in a directory it names before the workers start; the worker that runs
the container tests waits for it there."""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import pytest

from tests.ops.compose_stack import docker_problem, require_docker
from tests.ops.images.background import (
    CONTAINER_TESTS,
    OUTPUT_FILE,
    SHARED_BUILD_DIR,
    BackgroundBuild,
    wait_for_build,
)

IMAGES_FIXTURE = "container_images"
_BUILD = pytest.StashKey[BackgroundBuild]()


def _needs_images(item: pytest.Item) -> bool:
    return IMAGES_FIXTURE in getattr(item, "fixturenames", ())


# The container tests take about two minutes on one worker. Under pytest-xdist they start just
# before these (the type check and tests/workers/, about as long together), so that the other
# worker has those to run meanwhile instead of waiting for the container tests alone.
RUN_AFTER_THE_CONTAINER_TESTS = ("tests/test_types.py", "tests/workers/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Whole files, so that pytest-xdist's per-file scheduling starts them late too.
    files = {item.path for item in items if _needs_images(item)}
    assert all(str(f).endswith(CONTAINER_TESTS) for f in files), f"tests/conftest.py builds for {CONTAINER_TESTS} only"
    if files:
        moved = [item for item in items if item.path in files]
        rest = [item for item in items if item.path not in files]

        def after(item: pytest.Item) -> bool:
            where = item.path.relative_to(config.rootpath).as_posix()
            return where.startswith(RUN_AFTER_THE_CONTAINER_TESTS)

        at = next((k for k, item in enumerate(rest) if after(item)), len(rest))
        items[:] = rest[:at] + moved + rest[at:]


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller builds
    wanted = any(_needs_images(item) for item in session.items)
    if wanted and not config.option.collectonly and _BUILD not in config.stash and docker_problem() is None:
        config.stash[_BUILD] = BackgroundBuild()


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(_BUILD, None)
    if build is not None:
        build.finish()


@pytest.fixture(scope="session")
def container_images(pytestconfig: pytest.Config) -> dict[str, str]:
    """Tags of the stand-in images and of the project's image (role -> tag), once built."""
    require_docker()
    shared = os.environ.get(SHARED_BUILD_DIR) if hasattr(pytestconfig, "workerinput") else None
    if shared is not None and not (Path(shared) / OUTPUT_FILE).exists():
        shared = None  # the controller started none (no engine when the workers had collected)
    if shared is None and _BUILD not in pytestconfig.stash:  # e.g. the engine came up after collection
        pytestconfig.stash[_BUILD] = BackgroundBuild()
    # A long wait by design, with a timeout of its own: no "hang" stack dump (faulthandler_timeout)
    # while it lasts; the test's steps after it get one again.
    faulthandler.cancel_dump_traceback_later()
    try:
        return wait_for_build(Path(shared)) if shared else pytestconfig.stash[_BUILD].wait()
    finally:
        hang_dump_s = float(pytestconfig.getini("faulthandler_timeout") or 0)
        if hang_dump_s > 0 and sys.__stderr__ is not None:
            faulthandler.dump_traceback_later(hang_dump_s, file=sys.__stderr__)
