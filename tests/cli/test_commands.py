"""The `lehnz` command as a user runs it: real subprocesses, real servers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from app.embedded import EmbeddedServers
from app.settings import Settings
from tests.cli.support import (
    alive,
    embedded_env,
    embedded_pids,
    external_env,
    free_port,
    kill_embedded,
    lehnz,
    remove_dir,
    wait_dead,
)
from tests.waiting import eventually

pytestmark = pytest.mark.slow


def _pids(data_dir: Path) -> tuple[int, int]:
    return embedded_pids(data_dir)


def _alive(pid: int) -> bool:
    return alive(pid)


def _wait_dead(pid: int, timeout: float = 30) -> None:
    wait_dead(pid, timeout=timeout)


async def test_org_create_keys_and_limits_from_the_shell(settings: Settings, client: Any) -> None:
    env = external_env(settings)
    slug = f"shell-{uuid.uuid4().hex[:8]}"
    created = lehnz("org", "create", "--name", "Shell Shop", "--slug", slug, "--json", env=env)
    assert created.returncode == 0, created.stderr
    org = orjson.loads(created.stdout)
    assert set(org) == {"org_id", "tenant_id", "publishable_key", "secret_key"}
    assert org["tenant_id"] == slug
    assert org["publishable_key"].startswith("lehnz_pk_") and len(org["publishable_key"]) >= 9 + 32
    assert org["secret_key"].startswith("lehnz_sk_") and len(org["secret_key"]) >= 9 + 32
    status = await client.get("/v1/models/status", headers={"X-API-KEY": org["secret_key"]})
    assert status.status_code == 200

    duplicate = lehnz("org", "create", "--name", "Again", "--slug", slug, env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    second = orjson.loads(lehnz("keys", "create", "--org", slug, "--json", env=env).stdout)
    listed = orjson.loads(lehnz("keys", "list", "--org", slug, "--json", env=env).stdout)
    assert {p["key_id"] for p in listed} >= {second["key_id"]} and len(listed) == 2
    assert second["secret_key"] not in str(listed) and org["secret_key"] not in str(listed)
    revoked = lehnz("keys", "revoke", "--org", slug, "--key-id", second["key_id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    refused = await client.get("/v1/models/status", headers={"X-API-KEY": second["secret_key"]})
    assert refused.status_code == 401

    bad_limit = lehnz("org", "set-limit", "--org", slug, "--limit", "lots", env=env)
    assert bad_limit.returncode == 1 and "invalid rate limit" in bad_limit.stderr
    assert lehnz("org", "set-limit", "--org", slug, "--limit", "77/hour", env=env).returncode == 0

    async def limit_shown() -> bool:  # the api drops its cached org within its sync interval
        limited = await client.get("/v1/models/status", headers={"X-API-KEY": org["secret_key"]})
        return limited.headers["RateLimit-Limit"] == "77"

    await eventually(limit_shown, timeout=2.0, interval=0.05)

    trained = lehnz("train", "--org", slug, "--inline", env=env)
    assert trained.returncode == 0, trained.stderr
    assert orjson.loads(trained.stdout)["status"] == "succeeded"


async def test_org_delete_removes_the_tenant_from_every_store(
    settings: Settings, client: Any, app: Any, db: Any, redis: Any, drain: Any
) -> None:
    from sqlalchemy import func, select

    from app import redis_keys
    from app.queue import Queue
    from app.storage.tables import (
        ApiKey,
        Event,
        IdentityAlias,
        Item,
        Org,
        ServedRecommendation,
        TrainingRun,
        User,
    )

    env = {**external_env(settings), "COLUMNS": "300"}  # rich wraps at 80 otherwise
    slug = f"leaving-{uuid.uuid4().hex[:8]}"
    org = orjson.loads(lehnz("org", "create", "--name", "Leaving", "--slug", slug, "--json", env=env).stdout)
    org_id = org["org_id"]
    sk, pk = {"X-API-KEY": org["secret_key"]}, {"X-API-KEY": org["publishable_key"]}
    items = [{"item_id": f"i{k}", "item_type": "product", "status": "active"} for k in range(3)]
    assert (await client.post("/v1/ingest/items/upsert", json=items, headers=sk)).status_code == 202
    users = [{"user_id": "u1", "status": "active", "created_at": "2026-01-01T00:00:00Z"}]
    assert (await client.post("/v1/ingest/users/upsert", json=users, headers=sk)).status_code == 202
    events = [{"user_id": "anon", "event_family": "engagement", "event_name": "view", "item_id": "i0"},
              {"user_id": "u1", "event_family": "system", "event_name": "identify", "previous_user_id": "anon"},
              {"user_id": "u1", "event_family": "engagement", "event_name": "view", "item_id": "i1"}]
    assert (await client.post("/v1/ingest/events/ingest", json=events, headers=pk)).status_code == 202
    await drain()
    assert (await client.post("/v1/models/train", headers=sk)).status_code == 202
    await drain()
    assert (await client.post("/v1/recommend", json={"strategy": "popular", "user_id": "u1"}, headers=pk)).is_success
    await app.state.lehnz.served_log.flush()
    await drain()
    assert (settings.models_path / org_id).is_dir()
    # Accepted but not persisted yet when the org goes: the job must not end in the dead-letter list.
    assert (await client.post("/v1/ingest/events/ingest", json=events[:1], headers=pk)).status_code == 202
    # Nor may a queued erasure write its tombstones for the deleted org afterwards.
    assert (await client.delete("/v1/users/u1", headers=sk)).status_code == 202
    # A job of the org parked earlier holds its records: it goes with the org; a parked served-log
    # batch keeps only the other orgs' rows.
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(
        {"job_id": "x", "function": "ingest_events", "kwargs": {"org_id": org_id, "records": events}}))
    mixed = {"job_id": f"served-{org_id}", "function": "persist_served", "kwargs": {"rows": [
        {"org_id": org_id, "user_id": "u1"}, {"org_id": "another-org", "user_id": "u1"}]}}
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(mixed))
    parked = await redis.llen(redis_keys.DEAD_LETTER) - 1

    assert slug in [o["tenant_id"] for o in orjson.loads(lehnz("org", "list", "--json", env=env).stdout)]
    unconfirmed = lehnz("org", "delete", "--org", slug, env=env)  # no TTY, no --yes: nothing happens
    assert unconfirmed.returncode != 0
    assert (await client.get("/v1/models/status", headers=sk)).status_code == 200

    deleted = lehnz("org", "delete", "--org", slug, "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted organisation {slug}" in deleted.stderr and "3 items" in deleted.stderr

    async with db() as session:
        for table in (Item, User, Event, IdentityAlias, ApiKey, TrainingRun, ServedRecommendation):
            left = await session.scalar(select(func.count()).select_from(table).where(
                table.org_id == uuid.UUID(org_id)))
            assert left == 0, table.__tablename__
        assert await session.get(Org, uuid.UUID(org_id)) is None
    assert [key async for key in redis.scan_iter(match=f"*{org_id}*")] == []
    assert not await redis.sismember(redis_keys.SERVING_ORGS, org_id)
    assert not (settings.models_path / org_id).exists()

    async def refused() -> bool:  # api replicas drop the org's cached keys
        statuses = {(await client.get("/v1/models/status", headers=sk)).status_code,
                    (await client.post("/v1/recommend", json={"strategy": "popular"}, headers=pk)).status_code}
        return statuses == {401}

    await eventually(refused, timeout=5.0, interval=0.05)
    # A served-log batch still queued with the org's rows (the api buffers them): the other
    # orgs' rows of the batch land, the deleted org's are left out, nothing is parked.
    other = orjson.loads(lehnz("org", "create", "--name", "Staying", "--json", env=env).stdout)
    rows = [{"org_id": o, "recommendation_id": str(uuid.uuid4()), "strategy": "popular", "mode": "popularity",
             "user_id": None, "context_item_id": None, "item_ids": ["i0"], "model_version": None,
             "served_at": time.time()} for o in (org_id, other["org_id"])]
    await Queue(redis).enqueue_served(rows)
    await drain()
    assert await redis.llen(redis_keys.DEAD_LETTER) == parked
    left = [orjson.loads(raw) for raw in await redis.lrange(redis_keys.DEAD_LETTER, 0, -1)]
    [served_left] = [e for e in left if e["function"] == "persist_served" and "another-org" in str(e)]
    assert served_left["kwargs"]["rows"] == [{"org_id": "another-org", "user_id": "u1"}]
    await redis.lrem(redis_keys.DEAD_LETTER, 1, orjson.dumps(served_left))
    assert [key async for key in redis.scan_iter(match=f"*{org_id}*")] == []  # after the queued jobs ran
    async with db() as session:
        assert await session.get(ServedRecommendation, (uuid.UUID(other["org_id"]),
                                                        uuid.UUID(rows[1]["recommendation_id"]))) is not None
    assert slug not in lehnz("org", "list", "--json", env=env).stdout
    again = lehnz("org", "delete", "--org", org_id, "--yes", env=env)  # by id, when nothing is left
    assert again.returncode == 1 and "nothing left of one" in again.stderr
    await redis.set(redis_keys.model_version(org_id), "v")  # as if an earlier run stopped half-way
    finished = lehnz("org", "delete", "--org", org_id, "--yes", env=env)
    assert finished.returncode == 0 and "already removed from Postgres" in finished.stderr
    assert not await redis.exists(redis_keys.model_version(org_id))
    unknown = lehnz("org", "delete", "--org", "no-such-org", "--yes", env=env)
    assert unknown.returncode == 1 and "no organisation" in unknown.stderr


@pytest.fixture
def scratch() -> Iterator[Callable[[str], Path]]:
    """Short data-dir paths under /tmp (Unix socket limits); removed after the test, with any
    embedded server a failed test left running in them."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        made.append(Path(f"/tmp/lehnz-{prefix}-{uuid.uuid4().hex[:8]}"))
        return made[-1]

    yield make
    for path in made:
        kill_embedded(path)
        remove_dir(path)


def test_a_second_command_reuses_the_running_embedded_servers(scratch: Callable[[str], Path]) -> None:
    data_dir = scratch("reuse")
    holder = EmbeddedServers(data_dir)  # stands in for a running `lehnz serve`
    holder.open()
    try:
        before = _pids(data_dir)
        created = lehnz("org", "create", "--name", "Reuse", "--json", env=embedded_env(data_dir))
        assert created.returncode == 0, created.stderr
        assert _pids(data_dir) == before, "a second server was started"
        assert all(_alive(pid) for pid in before), "the command stopped servers it did not start"
        listed = lehnz("keys", "list", "--org", orjson.loads(created.stdout)["tenant_id"], "--json",
                       env=embedded_env(data_dir))
        assert listed.returncode == 0 and len(orjson.loads(listed.stdout)) == 1  # same database
    finally:
        holder.close()
    for pid in before:
        _wait_dead(pid)


def test_a_lone_command_with_init_starts_and_stops_the_embedded_servers(
    scratch: Callable[[str], Path]
) -> None:
    data_dir = scratch("lone")
    created = lehnz("org", "create", "--name", "Lone", "--json", "--init", env=embedded_env(data_dir))
    assert created.returncode == 0, created.stderr
    assert (data_dir / "postgres" / "PG_VERSION").exists() and (data_dir / "redis" / "redis.conf").exists()
    running = [p.pid for p in psutil.process_iter(["cmdline"])
               if _alive(p.pid) and str(data_dir) in " ".join(p.info["cmdline"] or [])]
    assert running == [], f"servers left running: {running}"


def _free_port() -> int:
    return free_port()


def _wait_ready(serve: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert serve.poll() is None, "lehnz serve exited"
        assert time.monotonic() < deadline, "lehnz serve did not become ready"
        time.sleep(0.2)


def test_serve_runs_everything_and_stops_cleanly(scratch: Callable[[str], Path]) -> None:
    """The README's first command: one process tree, then Ctrl-C leaves nothing running."""
    data_dir = scratch("serve")
    port = _free_port()
    env = embedded_env(data_dir, runtime_dir=data_dir)  # serve's pointer stays with the test
    serve = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                             start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(serve, base)
        org = orjson.loads(lehnz("org", "create", "--name", "Served", "--json", env=env).stdout)
        sk, pk = {"X-API-KEY": org["secret_key"]}, {"X-API-KEY": org["publishable_key"]}
        items = [{"item_id": f"i{k}", "item_type": "product", "status": "active"} for k in range(5)]
        assert httpx.post(f"{base}/v1/ingest/items/upsert", json=items, headers=sk).status_code == 202
        events = [{"user_id": f"u{n}", "event_family": "engagement", "event_name": "view", "item_id": f"i{n % 5}"}
                  for n in range(20)]
        assert httpx.post(f"{base}/v1/ingest/events/ingest", json=events, headers=pk).status_code == 202
        assert httpx.post(f"{base}/v1/models/train", headers=sk).status_code == 202
        deadline = time.monotonic() + 90
        while True:
            data = httpx.post(f"{base}/v1/recommend", json={"strategy": "popular"}, headers=pk).json()["data"]
            if data["model_version"] and data["results"]:
                break
            assert time.monotonic() < deadline, "no trained model served"
            time.sleep(0.2)
        servers = _pids(data_dir)
        children = psutil.Process(serve.pid).children(recursive=True)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            assert serve.wait(timeout=60) == 0
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
    for pid in (*servers, *(child.pid for child in children)):
        _wait_dead(pid)


def test_serve_refuses_a_busy_port_before_starting_anything(scratch: Callable[[str], Path]) -> None:
    data_dir = scratch("busy")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = lehnz("serve", "--port", str(port), env={**embedded_env(data_dir), "COLUMNS": "400"}, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr and "another --port" in refused.stderr
    assert not (data_dir / "postgres").exists(), "embedded servers were started for nothing"


def test_when_serve_is_killed_its_api_and_worker_stop_and_the_next_serve_takes_over(
    scratch: Callable[[str], Path]
) -> None:
    """kill -9 (or the OOM killer) gives `serve` no chance to stop its children: they notice
    and stop themselves, so the port is free again and a new `serve` starts cleanly."""
    data_dir = scratch("killed")
    port = _free_port()
    env = embedded_env(data_dir, runtime_dir=data_dir)  # serve's pointer stays with the test
    argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    first = subprocess.Popen(argv, env=env, start_new_session=True)
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(first, base)
        children = psutil.Process(first.pid).children()
        assert len(children) == 2  # the api and the worker
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        for child in children:
            _wait_dead(child.pid, timeout=40)

        second = subprocess.Popen(argv, env=env, start_new_session=True)
        _wait_ready(second, base)
        servers = _pids(data_dir)  # the first serve's embedded servers, taken over
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=60) == 0
        for pid in servers:
            _wait_dead(pid)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError, ValueError):
            for pid in _pids(data_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def test_dead_letter_discard_removes_one_orgs_parked_jobs_after_saving_them(
    settings: Settings, redis: Any, tmp_path: Path
) -> None:
    from app import redis_keys

    env = {**external_env(settings), "COLUMNS": "300"}
    gone, kept = str(uuid.uuid4()), str(uuid.uuid4())
    entries = [{"job_id": f"j{n}", "function": "ingest_events", "kwargs": {"org_id": org, "records": [n]}}
               for n, org in enumerate((gone, kept, gone))]
    await redis.rpush(redis_keys.DEAD_LETTER, *(orjson.dumps(e) for e in entries))
    assert lehnz("dead-letter", "discard", env=env).returncode == 1  # neither --org nor --all
    saved = tmp_path / "parked.jsonl"
    discarded = lehnz("dead-letter", "discard", "--org", gone, "--save", str(saved), env=env)
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded 2 parked job(s)" in discarded.stderr
    assert [orjson.loads(line) for line in saved.read_bytes().splitlines()] == [entries[0], entries[2]]
    left = [orjson.loads(raw) for raw in await redis.lrange(redis_keys.DEAD_LETTER, 0, -1)]
    assert entries[1] in left and entries[0] not in left and entries[2] not in left
    await redis.lrem(redis_keys.DEAD_LETTER, 1, orjson.dumps(entries[1]))


def test_serve_builds_its_urls_for_wildcard_and_ipv6_hosts() -> None:
    from app.cli import _LOOPBACK, _answers, _url_host

    assert _url_host("::1") == "[::1]" and _url_host("127.0.0.1") == "127.0.0.1"
    assert _LOOPBACK["0.0.0.0"] == "127.0.0.1" and _LOOPBACK["::"] == "::1"
    assert _answers("http://:::8000/healthz") is False  # an unusable URL is "not ready", not a crash
