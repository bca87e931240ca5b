"""The floors: what the same work costs with everything but the essential removed.

- a bare FastAPI app (run as its own process, `python -m benchmarks.speed.floors --port P`, by
  uvicorn with exactly the arguments `lehnz api` uses) with two endpoints: one that parses the
  JSON body and answers 202 like ingest, one that parses it and answers a small JSON 200;
- a raw numpy top-20 over the trained model's item factors (one BLAS thread, like the api);
- a raw asyncpg COPY of event rows into the events table;
- the `implicit` ALS fit alone on the very matrix the trainer builds (same code path up to it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

INGEST_PATH = "/floor/ingest"
JSON_PATH = "/floor/json"
_SMALL = orjson.dumps({"success": True, "message": "ok", "data": {"status": "ok"}, "error": None})


def create_bare_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(_SMALL, status_code=200, media_type="application/json")

    @app.post(INGEST_PATH)
    async def ingest(request: Request) -> Response:
        body = orjson.loads(await request.body())
        accepted = len(body) if isinstance(body, list) else 1
        content = orjson.dumps(
            {"success": True, "message": "events accepted", "data": {"accepted": accepted}, "error": None}
        )
        return Response(content, status_code=202, media_type="application/json")

    @app.post(JSON_PATH)
    async def small_json(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(_SMALL, status_code=200, media_type="application/json")

    return app


def serve(port: int) -> None:
    """uvicorn with the arguments of `lehnz api` (app/cli.py), so only the app differs."""
    import uvicorn

    uvicorn.run(
        "benchmarks.speed.floors:create_bare_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=1,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


# --- numpy top-k ------------------------------------------------------------------------------
def numpy_topk(item_factors: np.ndarray, queries: np.ndarray, *, k: int = 20) -> dict[str, Any]:
    """Time `scores = Y @ u; top-k by argpartition + sort` per query vector, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from benchmarks.speed.loadgen import percentiles

    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    times = np.empty(len(queries))
    with threadpool_limits(1):
        for warm in queries[: min(50, len(queries))]:
            _topk(factors, warm, k)
        for i, query in enumerate(queries):
            started = time.perf_counter()
            _topk(factors, query, k)
            times[i] = time.perf_counter() - started
    return {
        "items": int(factors.shape[0]),
        "factors": int(factors.shape[1]),
        "k": k,
        "queries": len(queries),
        "ms": percentiles(times * 1000),
    }


def _topk(factors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = factors @ query
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


# --- COPY -------------------------------------------------------------------------------------
def copy_floor(database_url: str, org_id: str, events: list[dict[str, Any]], *, rows: int) -> dict[str, Any]:
    """COPY `rows` rows (the given wire events, cycled, fresh ids) into events; rows/s inside COPY."""
    from benchmarks.speed.loading import copy_event_rows, wire_event_rows

    source = wire_event_rows(uuid.UUID(org_id), (events * (rows // max(len(events), 1) + 1))[:rows])
    seconds = asyncio.run(copy_event_rows(database_url, source))
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds else 0.0}


# --- ALS alone --------------------------------------------------------------------------------
def als_alone(settings: Any, org_id: str) -> dict[str, Any]:
    """Load the org's events exactly as the trainer does, build the same matrix, time fit_als alone."""
    from app.ml.als import fit_als
    from app.ml.interactions import data_now, decayed_matrix, encode_log, item_universe, user_universe
    from app.settings import train_params
    from workers.train_process import _load

    started = time.perf_counter()
    data = asyncio.run(_load(settings, uuid.UUID(org_id)))
    log = data.log
    now = time.time()
    params = train_params(settings, now=now, data_now=data_now(log.timestamps, now))
    item_ids = item_universe(log, data.catalog)
    encoded = encode_log(log, item_ids, user_universe(log))
    matrix = decayed_matrix(encoded, params)
    prepared_s = time.perf_counter() - started
    del data, log, encoded
    started = time.perf_counter()
    fit_als(
        matrix,
        factors=params.factors,
        iterations=params.iterations,
        regularization=params.regularization,
        alpha=params.alpha,
        seed=params.seed,
    )
    fit_s = time.perf_counter() - started
    return {
        "seconds": fit_s,
        "prepare_s": prepared_s,
        "users": int(matrix.shape[0]),
        "items": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "factors": params.factors,
        "iterations": params.iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the bare FastAPI floor server")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
