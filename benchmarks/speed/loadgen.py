"""The load generator: its own process, asyncio on uvloop, HTTP/1.1 keep-alive, bounded concurrency.

Why not httpx: on this machine an httpx.AsyncClient spends ~1.7 ms of CPU per request (measured:
~600 req/s at 100% of a core against a bare FastAPI endpoint that serves ~10,000 req/s). On a
2-core box the generator would then be the bottleneck and every throughput ratio would measure
the client. This generator writes pre-built requests on persistent connections and parses the
responses with `httptools` (MagicStack's binding of the llhttp parser, the one uvicorn itself
uses; already installed with uvicorn[standard]) on `uvloop`: ~15-20 us of CPU per request.
Both come from PyPI and are well kept; nothing here is a hand-written HTTP parser.

Protocol (parent <-> child): one JSON phase spec per line on stdin; the child runs it and
answers one JSON line on stdout; raw per-request arrays go to the .npz file the spec names.
Closed loop (`rate` null): each of `concurrency` connections sends its next request as soon as
the previous answer arrived. Open loop (`rate` = requests/s): request k is due at k / rate and
its latency counts from that moment, so a stall in the server is not hidden by the client
waiting for it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Statuses the generator records for requests that got no HTTP answer.
STATUS_CONNECTION_ERROR = 0
STATUS_TIMEOUT = -1

_LATENCY_MS = re.compile(rb'"latency_ms":\s*([0-9.eE+-]+)')
_MODE = re.compile(rb'"mode":"([a-z]+)"')


# --- child side ----------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - a malformed response is a failed request
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(f"bad response: {exc}"))
            self.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes, timeout_s: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.got_bytes = False
        assert self.transport is not None
        self.transport.write(raw)
        timer = loop.call_later(timeout_s, _expire, self.waiter)
        try:
            return await self.waiter
        finally:
            timer.cancel()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


@dataclass
class _Recorder:
    t: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    tag: list[int] = field(default_factory=list)
    body: list[int] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    mode: list[int] = field(default_factory=list)
    retries: int = 0


def _build_requests(spec: dict[str, Any]) -> tuple[list[list[bytes]], list[float]]:
    host = f"{spec.get('host', '127.0.0.1')}:{spec['port']}".encode()
    requests: list[list[bytes]] = []
    weights: list[float] = []
    for template in spec["templates"]:
        head = [f"{template.get('method', 'POST')} {template['path']} HTTP/1.1".encode(), b"Host: " + host]
        head += [f"{k}: {v}".encode() for k, v in template.get("headers", {}).items()]
        bodies = Path(template["bodies"]).read_bytes().split(b"\n")
        built = []
        for body in (b for b in bodies if b):
            lines = [*head, b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
            built.append(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        if not built:
            raise ValueError(f"no bodies in {template['bodies']}")
        requests.append(built)
        weights.append(float(template.get("weight", 1.0)))
    return requests, weights


async def run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    requests, weights = _build_requests(spec)
    modes = list(spec.get("modes", []))
    rng = random.Random(spec.get("seed", 1))
    # The template of every request, drawn up front (cheap and reproducible).
    schedule = rng.choices(range(len(requests)), weights=weights, k=65536)
    next_body = [rng.randrange(len(r)) for r in requests]
    concurrency = int(spec["concurrency"])
    duration = float(spec["duration_s"]) + float(spec.get("warmup_s", 0.0))
    timeout_s = float(spec.get("timeout_s", 30.0))
    rate = spec.get("rate")
    parse_server = bool(spec.get("server_latency", True))
    host = spec.get("host", "127.0.0.1")
    port = int(spec["port"])
    loop = asyncio.get_running_loop()
    rec = _Recorder()
    counter = 0

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, host, port)
        return conn

    conns = [await connect() for _ in range(concurrency)]
    started = time.perf_counter()
    end = started + duration

    async def one(slot: int) -> None:
        nonlocal counter
        conn = conns[slot]
        while True:
            k = counter
            counter += 1
            due = started + k / rate if rate else None
            now = time.perf_counter()
            if due is not None and due > now:
                if due >= end:
                    return
                await asyncio.sleep(due - now)
            elif (due or now) >= end:
                return
            tag = schedule[k & 65535]
            index = next_body[tag]
            next_body[tag] = (index + 1) % len(requests[tag])
            raw = requests[tag][index]
            sent = time.perf_counter()
            status, body = STATUS_CONNECTION_ERROR, b""
            for _attempt in range(2):
                fresh = False
                if conn.closed or not conn.keep_alive:
                    conn.close()
                    try:
                        conn = conns[slot] = await connect()
                    except OSError:
                        break
                    fresh = True
                try:
                    status, body = await conn.request(raw, timeout_s)
                    break
                except TimeoutError:
                    status = STATUS_TIMEOUT
                    conn.close()
                    break
                except (ConnectionError, OSError):
                    # A kept-alive connection the server closed just as we wrote: retry once on a
                    # new one, as HTTP clients do; anything else is an error.
                    status = STATUS_CONNECTION_ERROR
                    conn.close()
                    if fresh or conn.got_bytes:
                        break
                    rec.retries += 1
            done = time.perf_counter()
            rec.t.append((due or sent) - started)
            rec.lat.append(done - (due or sent))
            rec.status.append(status)
            rec.tag.append(tag)
            rec.body.append(index)
            server_ms = float("nan")
            mode = -1
            if parse_server and body:
                found = _LATENCY_MS.search(body)
                if found:
                    server_ms = float(found.group(1))
                found = _MODE.search(body)
                if found:
                    name = found.group(1).decode()
                    mode = modes.index(name) if name in modes else -1
            rec.server_ms.append(server_ms)
            rec.mode.append(mode)

    cpu0 = time.process_time()
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    for conn in conns:
        conn.close()
    np.savez(
        spec["out"],
        t=np.asarray(rec.t, np.float64),
        lat=np.asarray(rec.lat, np.float64),
        status=np.asarray(rec.status, np.int16),
        tag=np.asarray(rec.tag, np.int16),
        body=np.asarray(rec.body, np.int32),
        server_ms=np.asarray(rec.server_ms, np.float32),
        mode=np.asarray(rec.mode, np.int8),
    )
    return {"requests": len(rec.t), "wall_s": wall, "cpu_s": cpu, "retries": rec.retries}


def main() -> None:
    import uvloop

    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        try:
            result = uvloop.run(run_phase(spec))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# --- parent side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    tag: str
    path: str
    headers: dict[str, str]
    bodies: list[bytes]
    weight: float = 1.0
    method: str = "POST"


@dataclass
class PhaseResult:
    name: str
    templates: list[Template]
    warmup_s: float
    duration_s: float
    t: np.ndarray
    lat: np.ndarray
    status: np.ndarray
    tag: np.ndarray
    body: np.ndarray
    server_ms: np.ndarray
    mode: np.ndarray
    modes: list[str]
    client_cpu_s: float
    wall_s: float
    retries: int

    def window(self) -> np.ndarray:
        """Requests due/sent after the warm-up and before the end."""
        return (self.t >= self.warmup_s) & (self.t < self.warmup_s + self.duration_s)

    def summary(self, *, tag: str | None = None) -> dict[str, Any]:
        keep = self.window()
        if tag is not None:
            keep &= self.tag == [t.tag for t in self.templates].index(tag)
        lat_ms = self.lat[keep] * 1000
        ok = keep & (self.status >= 200) & (self.status < 300)
        server = self.server_ms[ok]
        server = server[np.isfinite(server)]
        statuses: dict[str, int] = {}
        for code, count in zip(*np.unique(self.status[keep], return_counts=True)):
            statuses[str(int(code))] = int(count)
        out: dict[str, Any] = {
            "requests": int(keep.sum()),
            "ok": int(ok.sum()),
            "errors": int(keep.sum() - ok.sum()),
            "statuses": statuses,
            "rps": float(keep.sum() / self.duration_s),
            "ok_rps": float(ok.sum() / self.duration_s),
            "client_ms": percentiles(lat_ms),
            "server_ms": percentiles(server) if len(server) else None,
        }
        if self.modes and ok.any():
            modes = self.mode[ok]
            out["modes"] = {
                self.modes[i]: round(float((modes == i).mean()), 4) for i in range(len(self.modes)) if (modes == i).any()
            }
        return out


def percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan"), "max": float("nan")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(np.mean(values)),
            "max": float(np.max(values))}


class LoadGen:
    """The parent's handle on the generator process (one process for the whole run)."""

    def __init__(self, work_dir: Path) -> None:
        import subprocess

        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.speed.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(
        self,
        name: str,
        *,
        port: int,
        templates: list[Template],
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        rate: float | None = None,
        modes: list[str] | None = None,
        server_latency: bool = True,
        timeout_s: float = 30.0,
        seed: int = 1,
    ) -> PhaseResult:
        self._n += 1
        stem = self.work_dir / f"{self._n:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"
        specs = []
        for i, template in enumerate(templates):
            bodies_path = stem.with_name(f"{stem.name}.t{i}.jsonl")
            bodies_path.write_bytes(b"\n".join(template.bodies) + b"\n")
            specs.append({"tag": template.tag, "path": template.path, "headers": template.headers,
                          "bodies": str(bodies_path), "weight": template.weight, "method": template.method})
        out = stem.with_suffix(".npz")
        spec = {
            "port": port, "templates": specs, "concurrency": concurrency, "duration_s": duration_s,
            "warmup_s": warmup_s, "rate": rate, "modes": modes or [], "server_latency": server_latency,
            "timeout_s": timeout_s, "out": str(out), "seed": seed,
        }
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator died (exit {self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator phase {name} failed: {answer['error']}")
        with np.load(out) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        for path in [out, *(Path(str(s["bodies"])) for s in specs)]:
            path.unlink(missing_ok=True)
        return PhaseResult(
            name=name, templates=templates, warmup_s=warmup_s, duration_s=duration_s, modes=modes or [],
            client_cpu_s=float(answer["cpu_s"]), wall_s=float(answer["wall_s"]), retries=int(answer["retries"]),
            **data,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    main()
