"""`lehnz serve` supervises its children: a real serve on the embedded servers, its api and worker
killed as the OOM killer would (SIGKILL), restarted, and a crash loop that ends everything."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.cli.support import (
    Serve,
    alive,
    embedded_env,
    embedded_pids,
    kill_embedded,
    lehnz,
    remove_dir,
    scratch_dir,
    wait_dead,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def log_records(serve: Serve) -> list[dict[str, Any]]:
    records = []
    for line in serve.log().splitlines():
        if line.startswith("{"):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return records


def crash_lines(serve: Serve, role: str, pid: int) -> list[dict[str, Any]]:
    return [r for r in log_records(serve) if r.get("logger") == "lehnz.serve" and r.get("role") == role
            and r.get("pid") == pid and r.get("level") == "error"]


def training_pool(worker: psutil.Process) -> list[psutil.Process] | None:
    """The worker's training-pool process and multiprocessing's resource tracker, once both run."""
    children = worker.children()
    spawned = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
    tracker = [c for c in children if "multiprocessing.resource_tracker" in " ".join(c.cmdline())]
    return [*spawned, *tracker] if spawned and tracker else None


def stored_events(base: str, sk: dict[str, str]) -> int:
    return int(httpx.get(f"{base}/v1/models/status", headers=sk).json()["data"]["stored"]["events"])


def answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_restarts_a_killed_worker_and_api_and_the_worker_leaves_no_orphans() -> None:
    root, runtime = scratch_dir("sup"), scratch_dir("run")
    data_dir = root / "data"
    env = {**embedded_env(data_dir, runtime), "LEHNZ_LOG_LEVEL": "INFO", "LEHNZ_ACCESS_LOG": "false",
           "LEHNZ_SERVE_RESTART_BACKOFF_S": "0.2"}
    serve = Serve(env, log_path=root / "serve.log")
    try:
        serve.wait_ready()
        base = serve.base
        created = lehnz("org", "create", "--name", "Supervised", "--json", env=env)
        assert created.returncode == 0, created.stderr
        org = orjson.loads(created.stdout)
        sk, pk = {"X-API-KEY": org["secret_key"]}, {"X-API-KEY": org["publishable_key"]}
        items = [{"item_id": f"i{k}", "item_type": "product", "status": "active"} for k in range(5)]
        assert httpx.post(f"{base}/v1/ingest/items/upsert", json=items, headers=sk).status_code == 202
        events = [{"user_id": f"u{n}", "event_family": "engagement", "event_name": "view",
                   "item_id": f"i{n % 5}"} for n in range(20)]
        assert httpx.post(f"{base}/v1/ingest/events/ingest", json=events, headers=pk).status_code == 202
        wait_until(lambda: stored_events(base, sk) == 20, timeout=60, what="events persisted")
        # A train through the CLI: it waits for the worker and prints the result. The worker's
        # training pool has then started a process (and a fresh one after it).
        trained = lehnz("train", "--org", org["tenant_id"], "--wait", "--timeout", "120", env=env,
                        timeout=180)
        assert trained.returncode == 0, trained.stderr
        result = orjson.loads(trained.stdout)
        assert result["status"] == "succeeded" and result["version"] and result["interactions"] > 0
        assert "waiting up to 120 s for the worker" in trained.stderr

        worker = serve.child("worker")
        assert worker is not None
        pool = wait_until(lambda: training_pool(worker), timeout=30, what="the training pool running")
        servers = embedded_pids(data_dir)

        os.kill(worker.pid, signal.SIGKILL)
        assert answers(base), "the api stopped answering when the worker died"
        # No orphan: the pool's process dies with the worker, and the resource tracker with it.
        wait_dead(*(p.pid for p in pool), timeout=20)

        def restarted_worker() -> psutil.Process | None:
            child = serve.child("worker")
            return child if child is not None and child.pid != worker.pid else None

        new_worker = wait_until(restarted_worker, timeout=60, what="a new worker")
        [crash] = crash_lines(serve, "worker", worker.pid)
        assert crash["signal"] == "SIGKILL" and "killed by SIGKILL" in crash["msg"], crash
        # The new worker takes jobs: an event accepted now is persisted.
        late = [{"user_id": "late", "event_family": "engagement", "event_name": "view", "item_id": "i1"}]
        assert httpx.post(f"{base}/v1/ingest/events/ingest", json=late, headers=pk).status_code == 202
        wait_until(lambda: stored_events(base, sk) == 21, timeout=60, what="the late event persisted")
        assert new_worker.is_running()
        assert embedded_pids(data_dir) == servers and all(alive(pid) for pid in servers), \
            "the embedded servers were restarted or stopped"

        api = serve.child("api")
        assert api is not None
        os.kill(api.pid, signal.SIGKILL)

        def restarted_api() -> bool:
            child = serve.child("api")
            return child is not None and child.pid != api.pid and answers(base)

        wait_until(restarted_api, timeout=60, what="the api answering again")
        [crash] = crash_lines(serve, "api", api.pid)
        assert crash["signal"] == "SIGKILL", crash
        assert httpx.get(f"{base}/v1/models/status", headers=sk).status_code == 200
        assert serve.process.poll() is None

        children = [serve.child("api"), serve.child("worker")]
        assert serve.stop() == 0, serve.log()[-3000:]
        wait_dead(*servers, *(c.pid for c in children if c is not None))
    finally:
        serve.kill()
        kill_embedded(data_dir)
        remove_dir(root)
        remove_dir(runtime)


def test_serve_gives_up_on_a_crash_loop_and_leaves_nothing_running() -> None:
    root, runtime = scratch_dir("loop"), scratch_dir("run")
    data_dir = root / "data"
    env = {**embedded_env(data_dir, runtime), "LEHNZ_SERVE_RESTART_BACKOFF_S": "0.2",
           "LEHNZ_SERVE_CRASH_LOOP_CRASHES": "3", "LEHNZ_SERVE_CRASH_LOOP_WINDOW_S": "300"}
    serve = Serve(env, log_path=root / "serve.log")
    try:
        serve.wait_ready()
        servers = embedded_pids(data_dir)
        assert list(runtime.glob("lehnz/serve-*.json")), "serve left no pointer for other commands"
        api = serve.child("api")
        assert api is not None
        killed: list[int] = []
        for _ in range(3):
            def new_worker() -> psutil.Process | None:
                child = serve.child("worker")
                return child if child is not None and child.pid not in killed else None

            worker = wait_until(new_worker, timeout=60, what="a (new) worker")
            killed.append(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
        assert serve.process.wait(timeout=90) == 1
        output = serve.log()
        assert "the worker crashed 3 times within 300 s" in output and "crash loop" in output, output[-3000:]
        assert f"pid {killed[-1]} killed by SIGKILL" in output
        assert "Traceback" not in output
        wait_dead(*servers, api.pid, *killed)
        assert not list(runtime.glob("lehnz/serve-*.json")), "serve left its pointer behind"
    finally:
        serve.kill()
        kill_embedded(data_dir)
        remove_dir(root)
        remove_dir(runtime)


def test_a_supervised_child_crash_is_restarted_with_doubling_capped_backoff() -> None:
    from app.supervisor import CrashPolicy, describe_exit

    policy = CrashPolicy(backoff_s=1, backoff_max_s=5, crash_loop_crashes=10, crash_loop_window_s=60)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL" and describe_exit(3) == "exited with code 3"
