"""The generated JWT secret (LEHNZ_JWT_SECRET unset): made in the data dir when the api starts,
the same for every process that shares the data dir, never seen half-written."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings

ROUNDS = 30
PROCESSES = 8


async def test_the_api_makes_the_secret_when_it_starts_not_at_the_first_login(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    # Imported here: the processes of the last test import this module, and need only Settings.
    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(server_urls, tmp_path / "data", jwt_secret=None)
    secret_file = tmp_path / "data" / "jwt_secret"
    assert not secret_file.exists()

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert secret_file.exists(), "the api started without making the JWT secret"
        first = secret_file.read_text()
    assert len(first) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert [p.name for p in secret_file.parent.iterdir() if p.name.startswith(".jwt_secret")] == []

    # A restart keeps it (sessions survive), and the process serves with that one.
    again = create_app(settings)
    async with again.router.lifespan_context(again):
        assert secret_file.read_text() == first
        assert again.state.lehnz.settings.resolved_jwt_secret() == first


async def test_an_api_with_a_configured_secret_writes_no_file(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    configured = "configured-" + "x" * 40
    app = create_app(make_settings(server_urls, tmp_path, jwt_secret=configured))
    async with app.router.lifespan_context(app):
        assert app.state.lehnz.settings.resolved_jwt_secret() == configured
    assert not (tmp_path / "jwt_secret").exists()


def _resolve_after(barrier: Any, data_dir: str) -> str:
    barrier.wait()
    settings = Settings(_env_file=None, data_dir=Path(data_dir), jwt_secret=None)  # type: ignore[call-arg]
    return settings.resolved_jwt_secret()


@pytest.mark.timeout(120)
def test_processes_starting_together_all_get_the_one_whole_secret(tmp_path: Path) -> None:
    # Several api processes on one data volume (compose --scale api=N) start at the same moment.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(PROCESSES) as pool:
        for round_ in range(ROUNDS):
            data_dir = tmp_path / f"round-{round_}"
            barrier = manager.Barrier(PROCESSES)
            secrets = pool.starmap(_resolve_after, [(barrier, str(data_dir))] * PROCESSES, chunksize=1)
            on_disk = (data_dir / "jwt_secret").read_text()
            assert len(on_disk) >= 32
            assert secrets == [on_disk] * PROCESSES, f"round {round_}: processes disagree on the secret"
