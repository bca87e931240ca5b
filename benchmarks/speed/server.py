"""The system under test, started piece by piece so each process can be measured on its own.

`Stack` opens the embedded PostgreSQL and Redis (or uses given URLs), migrates, and runs
`lehnz api`, `lehnz worker` and the floor server (floors.py) as child processes with the
benchmark's environment: rate limit out of the way, access log off, and (for the speed run)
the training scheduler quiet so no retrain lands in the middle of a measurement.
`ResourceSampler` records RSS and CPU of every child (worker + its training child) over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

# Out of the benchmark's way: at 100M requests/minute no phase is ever throttled.
BENCH_RATE_LIMIT = "100000000/minute"
# The speed run: no scheduled retrain in the middle of a measurement (trains are asked for).
QUIET_TRAINING = {"LEHNZ_TRAIN_INTERVAL_S": str(10**9), "LEHNZ_TRAIN_MIN_NEW_EVENTS": str(10**12)}


@dataclass(frozen=True)
class OrgKeys:
    org_id: str
    slug: str
    publishable_key: str
    secret_key: str


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StartupFailed(RuntimeError):
    pass


class Stack:
    def __init__(
        self, data_dir: Path, *, database_url: str | None = None, redis_url: str | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.database_url = database_url
        self.redis_url = redis_url
        self.model_dir = self.data_dir / "models"
        self.children: dict[str, Child] = {}
        self._embedded: Any = None
        self._redis: Any = None

    # --- servers ---------------------------------------------------------------------------
    def open(self) -> None:
        """Embedded PostgreSQL/Redis where no URL was given, then migrations."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if self.database_url is None or self.redis_url is None:
            from app.embedded import EmbeddedServers

            self._embedded = EmbeddedServers(
                self.data_dir / "servers", postgres=self.database_url is None, redis_server=self.redis_url is None
            )
            urls = self._embedded.open()
            self.database_url = self.database_url or urls.database_url
            self.redis_url = self.redis_url or urls.redis_url
        from app.storage.migrate import upgrade_head

        upgrade_head(self.database_url or "")

    def close(self) -> None:
        children = list(self.children.values())
        with contextlib.suppress(Exception):  # whatever did not stop is killed below
            self.stop(*self.children)
        self.children.clear()
        for child in children:
            if child.popen.poll() is None:
                child.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.popen.wait(timeout=10)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def redis(self) -> Any:
        """A synchronous Redis client for the harness (queue depths, counters)."""
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url or "", socket_timeout=10)
        return self._redis

    # --- processes -------------------------------------------------------------------------
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LEHNZ_DATABASE_URL": self.database_url or "",
                "LEHNZ_REDIS_URL": self.redis_url or "",
                "LEHNZ_DATA_DIR": str(self.data_dir),
                "LEHNZ_MODEL_DIR": str(self.model_dir),
                "LEHNZ_ACCESS_LOG": "false",
                "LEHNZ_LOG_LEVEL": "WARNING",
                "LEHNZ_RATE_LIMIT": BENCH_RATE_LIMIT,
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra or {})
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], port: int | None = None) -> Child:
        if name in self.children:
            raise RuntimeError(f"process {name} already running")
        log_path = self.data_dir / "logs" / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its whole life
        try:
            popen = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        child = Child(name, popen, log_path, port)
        self.children[name] = child
        return child

    def start_api(self, name: str = "api", *, extra_env: dict[str, str] | None = None) -> Child:
        port = free_port()
        argv = [sys.executable, "-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
        return self._spawn(name, argv, self.env(extra_env), port)

    def start_worker(self, name: str = "worker", *, extra_env: dict[str, str] | None = None) -> Child:
        return self._spawn(name, [sys.executable, "-m", "app.cli", "worker"], self.env(extra_env))

    def start_floor_server(self, name: str = "floor") -> Child:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.speed.floors", "--port", str(port)]
        return self._spawn(name, argv, self.env(), port)

    def stop(self, *names: str, timeout_s: float = 20.0) -> None:
        """SIGTERM to each named child, then wait for each (several shut down side by side)."""
        stopping = []
        for name in names:
            child = self.children.pop(name, None)
            if child is None or child.popen.poll() is not None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(child.pid).resume()
            child.popen.send_signal(signal.SIGTERM)
            stopping.append(child)
        deadline = time.monotonic() + timeout_s
        for child in stopping:
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(timeout=10)

    def suspend(self, name: str) -> None:
        """SIGSTOP (e.g. the worker while the api fills its queue); `resume` continues it."""
        psutil.Process(self.children[name].pid).suspend()

    def resume(self, name: str) -> None:
        psutil.Process(self.children[name].pid).resume()

    def check_alive(self) -> None:
        for child in self.children.values():
            if child.popen.poll() is not None:
                raise StartupFailed(f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}")

    # --- readiness -------------------------------------------------------------------------
    def start_measured(self, sampler: ResourceSampler, *, extra_env: dict[str, str] | None = None) -> None:
        """api, worker and the floor server, ready and watched by the sampler."""
        self.start_api(extra_env=extra_env)
        self.start_worker(extra_env=extra_env)
        self.start_floor_server()
        self.wait_http("api")
        self.wait_http("floor")
        self.wait_worker()
        for name in ("api", "worker", "floor"):
            sampler.watch(name, self.children[name].pid)

    def wait_http(self, name: str, *, path: str = "/healthz", timeout_s: float = 60.0) -> None:
        import httpx

        child = self.children[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{child.port}{path}", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise StartupFailed(f"{name} did not answer {path} within {timeout_s:.0f} s:\n{child.tail()}")

    def wait_worker(self, name: str = "worker", *, timeout_s: float = 60.0) -> None:
        """Ready once it has run a job: an empty ingest job (the project's own enqueue) for a probe org."""
        from app.queue import Queue, create_redis

        probe = str(uuid.uuid4())

        async def enqueue() -> None:
            redis = create_redis(self.redis_url or "")
            try:
                await Queue(redis).enqueue_ingest("events", probe, [])
            finally:
                await redis.aclose()

        asyncio.run(enqueue())
        deadline = time.monotonic() + timeout_s
        while self.ingest_pending(probe) > 0:
            self.check_alive()
            if time.monotonic() > deadline:
                raise StartupFailed(f"{name} ran no job within {timeout_s:.0f} s:\n{self.children[name].tail()}")
            time.sleep(0.05)

    # --- data ------------------------------------------------------------------------------
    def create_org(self, name: str) -> OrgKeys:
        """An org and its first key pair, written straight to the database (like `lehnz org create`)."""
        from app.storage import orgs
        from app.storage.db import create_engine, create_session_factory

        async def create() -> OrgKeys:
            engine = create_engine(self.database_url or "", pool_size=1)
            try:
                async with create_session_factory(engine)() as session, session.begin():
                    slug = f"bench-{uuid.uuid4().hex[:10]}"
                    org = await orgs.create_org(session, name=name, slug=slug, domain="commerce")
                    pair = await orgs.add_key_pair(session, org.id)
                return OrgKeys(str(org.id), slug, pair.publishable_key, pair.secret_key)
            finally:
                await engine.dispose()

        return asyncio.run(create())

    def ingest_pending(self, org_id: str) -> int:
        from app import redis_keys

        return int(self.redis.zcard(redis_keys.pending(org_id)))

    def train_owed(self, org_id: str) -> bool:
        """A train of the org was asked for while one ran: the worker runs another after it."""
        from app import redis_keys

        return bool(self.redis.hexists(redis_keys.TRAIN_AGAIN, org_id))

    def events_persisted(self) -> int:
        """The workers' running total of persisted events (all orgs)."""
        from app import redis_keys

        return int(self.redis.hget(redis_keys.INGEST_STATS, "events:persisted") or 0)


# --- profiling (optional: `pip install py-spy`) --------------------------------------------------
class Profiler:
    """py-spy sampling one process for one phase: a flame graph (SVG) and collapsed stacks (text)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.available = out_dir is not None and shutil.which("py-spy") is not None

    @contextlib.contextmanager
    def record(self, pid: int, name: str, seconds: float) -> Iterator[None]:
        if not self.available or self.out_dir is None:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        procs = [
            subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
                 "--nonblocking", "--format", fmt, "--output", str(self.out_dir / f"{name}.{ext}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"))
        ]
        try:
            yield
        finally:
            for proc in procs:
                try:
                    proc.wait(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


# --- resource sampling ---------------------------------------------------------------------------
@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # the process
    rss_tree: list[int] = field(default_factory=list)  # with its children (the worker's training child)
    cpu: list[float] = field(default_factory=list)  # cumulative CPU seconds of the tree


class ResourceSampler:
    """RSS and CPU of named processes (and their children) every `interval_s`, in a thread."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.series: dict[str, Series] = {}
        self._procs: dict[str, psutil.Process] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._procs[name] = psutil.Process(pid)
            self.series.setdefault(name, Series())

    def forget(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def start(self) -> ResourceSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def now(self) -> float:
        return time.monotonic() - self.started

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> dict[str, tuple[int, int, float]]:
        out: dict[str, tuple[int, int, float]] = {}
        with self._lock:
            procs = dict(self._procs)
        t = self.now()
        for name, proc in procs.items():
            try:
                reading = _reading(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[name] = reading
            with self._lock:
                series = self.series[name]
                series.t.append(t)
                series.rss.append(reading[0])
                series.rss_tree.append(reading[1])
                series.cpu.append(reading[2])
        return out

    def cpu_seconds(self, name: str) -> float:
        proc = self._procs.get(name)
        if proc is None:
            return 0.0
        try:
            return _reading(proc)[2]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0.0

    def peak_tree_rss(self, name: str, since: float = 0.0) -> int:
        series = self.series.get(name)
        if series is None:
            return 0
        return max((r for t, r in zip(series.t, series.rss_tree) if t >= since), default=0)


def _reading(proc: psutil.Process) -> tuple[int, int, float]:
    rss = proc.memory_info().rss
    cpu = sum(proc.cpu_times()[:4])  # with reaped children (finished training runs)
    tree = rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            tree += child.memory_info().rss
            cpu += sum(child.cpu_times()[:2])
    return rss, tree, cpu
