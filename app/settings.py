"""The one typed settings object. Nothing else in the code reads environment variables.

Every tunable has exactly one default, here. Values come from `LEHNZ_*` environment
variables (or a `.env` file in the working directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.limit_syntax import parse_limit
from app.ml.params import TrainParams

# The one default of every training tunable lives on TrainParams; Settings reads it from there.
# Any: the defaults have different types (the fields read below all have one).
_ML: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainParams)}

# Standard event names -> weight (the table in docs/integration.md, "Event names").
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "search": 0.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "remove_from_cart": -2.0,
    "checkout_start": 5.0,
    "purchase": 10.0,
}
# Weight of an event whose name is not in the table above, by family.
DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "exposure": 0.0,
    "engagement": 1.0,
    "conversion": 8.0,
    "system": 0.0,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEHNZ_", env_file=".env", extra="ignore")

    # --- where the shared state lives -------------------------------------------------
    database_url: str | None = Field(
        default=None, description="postgresql+asyncpg://... ; unset = embedded PostgreSQL"
    )
    redis_url: str | None = Field(default=None, description="redis://... ; unset = embedded Redis")
    data_dir: Path = Field(
        default=Path(".lehnz"), description="embedded servers' data, the local model store, the JWT secret"
    )
    model_dir: Path | None = Field(
        default=None, description="model store; default <data_dir>/models (a shared volume in compose)"
    )

    # --- api --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    rate_limit: str = Field(default="1000/15minutes", description="per-org limit across all its keys")
    auth_rate_limit: str = Field(default="10/15minutes", description="per-IP limit on /auth/*")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated proxy IPs whose X-Forwarded-For is believed",
    )
    max_body_bytes: int = 5 * 1024 * 1024
    max_batch: int = 1000
    jwt_secret: str | None = Field(
        default=None, description="dashboard session tokens; random at first start, kept in the data dir"
    )
    jwt_ttl_s: int = 3600
    metrics_token: str | None = Field(
        default=None, description="if set, GET /metrics requires Authorization: Bearer <token>"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="origins allowed to call the publishable endpoints from a browser",
    )
    log_level: str = "INFO"
    access_log: bool = True
    sync_interval_s: float = Field(
        default=0.25, description="how often an api process checks Redis for new models, catalog and key changes"
    )

    # --- queue and worker -------------------------------------------------------------
    ingest_job_timeout_s: int = Field(
        default=60, description="an ingest job running longer is cancelled and retried"
    )
    ingest_max_tries: int = Field(default=2000, description="tries before a job is parked in the dead-letter list")
    retry_backoff_max_s: float = 30.0
    worker_concurrency: int = 8
    train_interval_s: int = 300
    train_job_timeout_s: int = 3600
    train_min_new_events: int = Field(default=1, description="scheduled retrain only after this many new events")
    # --- big tenants: what a train reads and the memory it may use (docs/operations.md, "Big tenants") ---
    train_max_events: int = Field(
        default=50_000_000, ge=0,
        description="a train reads at most this many of the org's most recent events; 0 = no limit",
    )
    train_window_days: float = Field(
        default=0.0, ge=0, description="a train reads events at most this many days older than the org's newest; "
                                       "0 = no limit",
    )
    train_memory_budget_mb: int = Field(
        default=0, ge=0, description="a train whose estimated peak memory is above this refuses to run; "
                                     "0 = half the memory of the machine (or of the container's limit)",
    )
    recent_activity_len: int = Field(default=50, description="per-user interactions kept in Redis")
    served_retention_days: int = Field(
        default=180, ge=0, description="served-recommendation log rows older than this are deleted; 0 keeps them"
    )

    # --- lehnz serve: restarting a crashed api or worker (app/supervisor.py) ---------------
    serve_restart_backoff_s: float = Field(
        default=1.0, gt=0, description="wait before restarting a crashed child; doubles with each recent crash"
    )
    serve_restart_backoff_max_s: float = Field(default=30.0, gt=0, description="cap of that wait")
    serve_crash_loop_crashes: int = Field(
        default=5, ge=1, description="this many crashes of the api (or the worker) within the window: serve gives up"
    )
    serve_crash_loop_window_s: float = Field(default=120.0, gt=0, description="the crash-loop window")

    # --- learning (defaults are TrainParams', documented in app/ml/params.py) -------
    # A partial table is merged into the defaults: `{"view": 3}` changes the weight of views only.
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    family_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    decay_half_life_days: float = _ML["decay_half_life_days"]
    trending_half_life_hours: float = _ML["trending_half_life_hours"]
    session_gap_minutes: float = _ML["session_gap_minutes"]
    als_factors: int = _ML["factors"]
    als_iterations: int = _ML["iterations"]
    als_regularization: float = _ML["regularization"]
    als_alpha: float = _ML["alpha"]
    als_presence: bool = Field(
        default=_ML["als_presence"], description="ALS confidence from presence(weight), not the decayed weight"
    )
    knn_neighbours: int = _ML["knn_neighbours"]
    ease_max_items: int = Field(
        default=_ML["ease_max_items"], description="use EASE for personalized when the catalog is at most this big"
    )
    ease_lambda: float = _ML["ease_lambda"]
    pair_shrinkage: float = _ML["pair_shrinkage"]
    pair_half_life_days: float = _ML["pair_half_life_days"]
    pair_lift_weight: float = _ML["pair_lift_weight"]
    max_basket_items: int = _ML["max_basket_items"]
    trending_prior_events: float = _ML["trending_prior_events"]
    content_pair_budget: int = _ML["content_pair_budget"]
    exposure_prior_events: float = _ML["exposure_prior_events"]
    # --- per-organisation model search (app/ml/selection.py) -------------------------------
    model_search: bool = Field(
        default=True, description="choose personalized's model per org on a holdout of its own data"
    )
    model_search_budget_s: float = Field(
        default=600.0, gt=0, description="no new candidate starts after this many seconds of a search"
    )
    model_search_users: int = Field(default=2000, ge=10, description="holdout users sampled by a search")
    model_search_growth: float = Field(
        default=0.5, ge=0, description="search again once the interactions grew by this share since the last search"
    )
    # A serving process keeps at most this many orgs' models in memory (least recently used out).
    model_cache_orgs: int = 64

    @field_validator("event_weights")
    @classmethod
    def _over_default_events(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_EVENT_WEIGHTS, **value}

    @field_validator("family_weights")
    @classmethod
    def _over_default_families(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_FAMILY_WEIGHTS, **value}

    @field_validator("rate_limit", "auth_rate_limit")
    @classmethod
    def _a_rate_limit(cls, value: str) -> str:
        parse_limit(value)  # "1000/15minutes": a typo fails at start, not on the first request
        return value

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    @property
    def models_path(self) -> Path:
        return (self.model_dir or self.data_dir / "models").resolve()

    def event_weight(self, event_name: str, event_family: str) -> float:
        if event_name in self.event_weights:
            return self.event_weights[event_name]
        return self.family_weights.get(event_family, 0.0)

    def resolved_jwt_secret(self) -> str:
        """The configured secret, else the one kept in the data dir: the api makes it when it
        starts (create_app's lifespan), and whoever needs it first makes it otherwise."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Written whole under a temporary name (mode 0600), then linked into place. Linking
            # fails if another process got there first, and then everyone reads the winner's;
            # no reader ever sees a file that exists but is not written yet.
            fd, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=".jwt_secret.")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(48))
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
            finally:
                os.unlink(temporary)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()


# TrainParams fields whose setting has another name (the ALS ones carry the family's prefix in
# the environment); every other tunable field shares its name with its setting.
_TRAIN_SETTING_NAMES = {name: f"als_{name}" for name in ("factors", "iterations", "regularization", "alpha")}
# Fields a train sets itself, never from the environment.
_TRAIN_RUN_FIELDS = frozenset({"now", "data_now", "personal_model", "seed"})


def train_params(settings: Settings, *, now: float, data_now: float | None = None) -> TrainParams:
    """The training tunables of these settings, for one run at `now` on data whose newest event
    is at `data_now` (TrainParams.data_now)."""
    tunables = {
        field.name: getattr(settings, _TRAIN_SETTING_NAMES.get(field.name, field.name))
        for field in dataclasses.fields(TrainParams)
        if field.name not in _TRAIN_RUN_FIELDS
    }
    return TrainParams(now=now, data_now=data_now, **tunables)
