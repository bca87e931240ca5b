"""Issue 15.1: a command never silently creates a second, empty embedded database. Run away from
the data of `lehnz serve`, it joins that serve's data (saying so), or refuses with the fix;
`--init` creates a new database on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from app.embedded import ServePointer, running_serves, write_pointer
from app.resources import NoDatabase, locate
from app.settings import Settings
from tests.cli.support import Serve, clean_env, kill_embedded, lehnz, remove_dir, scratch_dir

pytestmark = pytest.mark.slow


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.timeout(300)
def test_a_command_elsewhere_joins_the_running_serve_refuses_without_one_and_init_creates_one() -> None:
    shop, elsewhere, runtime = scratch_dir("shop"), scratch_dir("else"), scratch_dir("run")
    env = clean_env(runtime)  # no LEHNZ_DATA_DIR: each command's data dir is ./.lehnz in its folder
    serve = Serve(env, cwd=shop, log_path=shop / "serve.log")
    try:
        serve.wait_ready()
        joined = lehnz("org", "create", "--name", "Other Shop", "--json", env=env, cwd=elsewhere)
        assert joined.returncode == 0, joined.stderr
        assert f"joined the running `lehnz serve` at http://127.0.0.1:{serve.port}" in joined.stderr
        assert str(shop / ".lehnz") in joined.stderr
        assert not (elsewhere / ".lehnz").exists(), "a second database was created"
        org = orjson.loads(joined.stdout)
        status = httpx.get(f"{serve.base}/v1/models/status", headers={"X-API-KEY": org["secret_key"]})
        assert status.status_code == 200, status.text  # the running server knows the new org's keys

        # A data dir named explicitly is never swapped for the serve's.
        named = lehnz("org", "list", env={**env, "LEHNZ_DATA_DIR": str(elsewhere / "named")}, cwd=elsewhere)
        assert named.returncode == 1
        assert f"no lehnz database in {elsewhere / 'named'} (LEHNZ_DATA_DIR)" in one_line(named.stderr)
        assert not (elsewhere / "named").exists()

        assert serve.stop() == 0
        refused = lehnz("org", "create", "--name", "Lost", "--json", env=env, cwd=elsewhere)
        assert refused.returncode == 1 and refused.stdout == ""
        line = one_line(refused.stderr)
        assert "no running `lehnz serve` was found: run it where `lehnz serve` runs" in line
        assert "or set LEHNZ_DATA_DIR=" in line
        assert "--init creates a new, empty one there" in line
        assert not (elsewhere / ".lehnz").exists()
        listed = lehnz("keys", "list", "--org", org["tenant_id"], env=env, cwd=elsewhere)
        assert listed.returncode == 1
        assert "--init" not in one_line(listed.stderr)  # a new, empty database is of no use there

        created = lehnz("org", "create", "--name", "New Shop", "--json", "--init", env=env, cwd=elsewhere)
        assert created.returncode == 0, created.stderr
        assert f"creating a new embedded database in {elsewhere / '.lehnz'}" in created.stderr
        assert (elsewhere / ".lehnz" / "postgres" / "PG_VERSION").exists()
        assert orjson.loads(created.stdout)["tenant_id"] == "new-shop"

        # Where serve ran, its data is used as it is, without a word.
        at_home = lehnz("org", "list", "--json", env=env, cwd=shop)
        assert at_home.returncode == 0 and at_home.stderr == "", at_home.stderr
        assert [o["tenant_id"] for o in orjson.loads(at_home.stdout)] == ["other-shop"]
    finally:
        serve.kill()
        for folder in (shop, elsewhere):
            kill_embedded(folder / ".lehnz")
            remove_dir(folder)
        remove_dir(runtime)


def test_the_pointer_is_followed_only_to_one_live_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("LEHNZ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runtime").mkdir(mode=0o700)

    def pointer(process_pid: int, started_at: float, data: str) -> ServePointer:
        return ServePointer(
            pid=process_pid, started_at=started_at, url=f"http://127.0.0.1:{8000 + len(data)}",
            data_dir=str(tmp_path / data), models_path=str(tmp_path / data / "models"),
            database_url=None, redis_url=None,
        )

    import psutil

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = write_pointer(pointer(int(gone.stdout), 1.0, "dead"))
    assert dead is not None
    with pytest.raises(NoDatabase, match="no running `lehnz serve` was found"):
        locate(Settings(_env_file=None))  # type: ignore[call-arg]
    assert not dead.exists(), "the pointer of a serve that is gone was kept"

    me = psutil.Process()
    write_pointer(pointer(me.pid, me.create_time(), "a"))
    settings, note = locate(Settings(_env_file=None))  # type: ignore[call-arg]
    assert settings.data_dir == tmp_path / "a" and settings.models_path == tmp_path / "a" / "models"
    assert note is not None and "joined the running `lehnz serve`" in note

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = psutil.Process(sleeper.pid)
        write_pointer(pointer(sleeper.pid, other.create_time(), "bb"))
        assert len(running_serves()) == 2
        with pytest.raises(NoDatabase, match="2 `lehnz serve` are running") as refused:
            locate(Settings(_env_file=None))  # type: ignore[call-arg]
        assert str(tmp_path / "a") in str(refused.value) and str(tmp_path / "bb") in str(refused.value)
        # A reused pid is not the serve that wrote the pointer.
        write_pointer(pointer(sleeper.pid, other.create_time() - 100, "bb"))
        assert [p.data_dir for p in running_serves()] == [str(tmp_path / "a")]
    finally:
        sleeper.kill()
        sleeper.wait()
