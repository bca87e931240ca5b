"""tests/ops: the container test's images are built in the background from the moment the
session has collected a test that needs them (tests/ops/images/background.py), and the tests
that need them run last, so that the build has the rest of the suite's time to finish in."""

from __future__ import annotations

import faulthandler
import sys

import pytest

from tests.ops.compose_stack import docker_problem, require_docker
from tests.ops.images.background import BackgroundBuild

IMAGES_FIXTURE = "container_images"
_BUILD = pytest.StashKey[BackgroundBuild]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    needs_images = [item for item in items if IMAGES_FIXTURE in getattr(item, "fixturenames", ())]
    if needs_images:
        moved = set(needs_images)
        items[:] = [item for item in items if item not in moved] + needs_images


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    wanted = any(IMAGES_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items)
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
    if _BUILD not in pytestconfig.stash:  # e.g. the engine came up after collection
        pytestconfig.stash[_BUILD] = BackgroundBuild()
    # A long wait by design, with a timeout of its own: no "hang" stack dump (faulthandler_timeout)
    # while it lasts; the test's steps after it get one again.
    faulthandler.cancel_dump_traceback_later()
    try:
        return pytestconfig.stash[_BUILD].wait()
    finally:
        hang_dump_s = float(pytestconfig.getini("faulthandler_timeout") or 0)
        if hang_dump_s > 0 and sys.__stderr__ is not None:
            faulthandler.dump_traceback_later(hang_dump_s, file=sys.__stderr__)
