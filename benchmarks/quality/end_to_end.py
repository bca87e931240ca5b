"""The product as a storefront uses it: a fresh `lehnz serve` and its public HTTP API.

`Server` starts `lehnz serve` as a subprocess (embedded PostgreSQL and Redis in a temporary
data dir, a free port, default settings except LEHNZ_RATE_LIMIT, which is raised so that the
load is not throttled: a real shop spreads it over weeks), makes organisations with
`lehnz org create --json`, and stops everything it started (the embedded servers included)
and removes the data dir. `Shop` is one organisation's client: items and events go in through
the public ingest endpoints in batches of 1,000, training through POST /v1/models/train, and
answers come from POST /v1/recommend.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import psutil

T = TypeVar("T")
BATCH = 1000  # records per ingest request: the API's maximum (LEHNZ_MAX_BATCH)
RATE_LIMIT = "1000000/minute"  # per org; the default (1,000 / 15 min) would throttle a bulk load
START_TIMEOUT_S = 180.0
LOAD_TIMEOUT_S = 1800.0
TRAIN_TIMEOUT_S = 1800.0


class EndToEndFailed(RuntimeError):
    """The server did something a storefront would notice (an error status, a timeout)."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise EndToEndFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Shop:
    """One organisation, through its keys, as a storefront's backend talks to the API."""

    base: str
    org_id: str
    publishable_key: str
    secret_key: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=120.0))
    loaded: dict[str, float] = field(default_factory=dict)  # what the load measured

    def _post(self, path: str, body: Any, *, secret: bool) -> dict[str, Any]:
        key = self.secret_key if secret else self.publishable_key
        response = self.client.post(f"{self.base}{path}", content=json.dumps(body),
                                    headers={"X-API-KEY": key, "Content-Type": "application/json"})
        if response.status_code >= 300:
            raise EndToEndFailed(f"POST {path} -> {response.status_code}: {response.text[:300]}")
        return response.json()["data"]  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        response = self.client.get(f"{self.base}/v1/models/status", headers={"X-API-KEY": self.secret_key})
        if response.status_code != 200:
            raise EndToEndFailed(f"GET /v1/models/status -> {response.status_code}: {response.text[:300]}")
        return response.json()["data"]  # type: ignore[no-any-return]

    def load(self, items: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
        """Upsert the catalog, send the events, and wait until Postgres holds all of them."""
        started = time.perf_counter()
        for start in range(0, len(items), BATCH):
            self._post("/v1/ingest/items/upsert", list(items[start:start + BATCH]), secret=True)
        for start in range(0, len(events), BATCH):
            self._post("/v1/ingest/events/ingest", list(events[start:start + BATCH]), secret=False)
        accepted = time.perf_counter() - started

        def stored() -> bool:
            status = self.status()
            counts = status["stored"]
            return counts["items"] >= len(items) and counts["events"] >= len(events) and status["queue_depth"] == 0

        wait_for(stored, timeout=LOAD_TIMEOUT_S, what="the stored counts reaching what was sent")
        done = time.perf_counter() - started
        self.loaded = {"items": len(items), "events": len(events), "accepted_seconds": round(accepted, 1),
                       "stored_seconds": round(done, 1), "events_per_second": round(len(events) / done)}

    def train(self) -> dict[str, Any]:
        """POST /v1/models/train {"search": true}, then wait for the model it produced (the model
        search ran on all the data) and for the api to serve it. Returns the model status.

        The search is asked for explicitly: the worker already trained on the first events
        while they arrived ("no model yet"), and a later train searches again only once the
        data has grown by half; asking makes the searched data the whole load, every run."""
        events = self.loaded.get("events")
        self._post("/v1/models/train", {"search": True}, secret=True)

        def trained() -> dict[str, Any] | None:
            status = self.status()
            model, quality = status["model"], status["quality"] or {}
            done = (model is not None and model["interactions"] == events and not status["training"]
                    and quality.get("search_reason") == "requested" and quality.get("searched_version") == model["version"])
            return status if done else None

        status = wait_for(trained, timeout=TRAIN_TIMEOUT_S, what="a searched model on all the data", interval=0.25)
        version = status["model"]["version"]
        probe = {"strategy": "popular", "limit": 1}
        wait_for(lambda: self.recommend(probe)["model_version"] == version, timeout=60,
                 what=f"the api serving model {version}")
        return status

    def recommend(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/recommend", body, secret=False)


class Server:
    """A fresh `lehnz serve` (context manager): its own data dir, port and runtime dir."""

    def __init__(self, *, log: Callable[[str], None] = lambda _: None) -> None:
        self.log = log
        # Short: the embedded Postgres and Redis listen on Unix sockets inside (107-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix="lehnz-e2e-", dir="/tmp"))
        self.data_dir = self.root / "data"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("LEHNZ_")}
        self.env.update({
            "LEHNZ_DATA_DIR": str(self.data_dir), "LEHNZ_RATE_LIMIT": RATE_LIMIT, "LEHNZ_LOG_LEVEL": "WARNING",
            "XDG_RUNTIME_DIR": str(self.root),  # serve's pointer stays ours: no other serve finds it
        })
        self.process: subprocess.Popen[bytes] | None = None
        self.started_seconds = 0.0
        self.shops: list[Shop] = []

    def __enter__(self) -> Self:
        started = time.perf_counter()
        self._log = open(self.root / "serve.log", "wb")  # closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)], env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for(self._ready, timeout=START_TIMEOUT_S, what="lehnz serve ready", interval=0.2)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.started_seconds = time.perf_counter() - started
        self.log(f"lehnz serve ready on {self.base} in {self.started_seconds:.0f} s")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise EndToEndFailed(f"lehnz serve exited ({self.process.returncode}):\n{self.server_log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        return False

    def server_log(self) -> str:
        return (self.root / "serve.log").read_text(errors="replace")

    def shop(self, name: str) -> Shop:
        """A new organisation, made the documented way: `lehnz org create --json`."""
        done = subprocess.run([sys.executable, "-m", "app.cli", "org", "create", "--name", name, "--json"],
                              env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise EndToEndFailed(f"lehnz org create failed: {done.stderr.strip()[-500:]}")
        created = json.loads(done.stdout)
        shop = Shop(self.base, created["org_id"], created["publishable_key"], created["secret_key"])
        self.shops.append(shop)
        return shop

    def __exit__(self, *exc: object) -> None:
        for shop in self.shops:
            shop.client.close()
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=10)
            _stop_embedded(self.data_dir)
        finally:
            with contextlib.suppress(AttributeError):
                self._log.close()
            shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_embedded(data_dir: Path) -> None:
    """serve stops the embedded servers it started; if it could not (killed), this does."""
    for pid_file in (data_dir / "postgres" / "postmaster.pid", data_dir / "redis" / "redis.pid"):
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError, psutil.Error):
            pid = int(pid_file.read_text().splitlines()[0])
            process = psutil.Process(pid)
            if "postgres" in process.name() or "redis" in process.name():
                process.kill()
                process.wait(timeout=10)


def event_id(*parts: object) -> str:
    """A deterministic client event id: a retried batch never stores an event twice."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "lehnz-eval:" + ":".join(str(p) for p in parts)))
