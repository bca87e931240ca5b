"""`lehnz bench`: the speed benchmark (latency, throughput, ingest, training, memory, soak).

One module per concern:
- synthetic.py: a synthetic catalog and interaction log of a given size (and the real datasets)
- loading.py:   the preload (asyncpg COPY straight into items/events)
- server.py:    start/stop the embedded servers, api, worker and floor server; RSS/CPU sampling
- loadgen.py:   the load generator, run in its own process (asyncio + uvloop + httptools)
- floors.py:    the floors every figure is divided by (bare endpoint, numpy top-k, COPY, ALS alone)
- run.py:       the speed run, phase by phase
- soak.py:      mixed traffic over time (issue 6)
- report.py:    JSON, markdown (docs/benchmarks.md speed region) and the PNG plots
"""
