"""The one typed settings object. Nothing else in the code reads environment variables.

Every tunable has exactly one default, here. Values come from `LEHNZ_*` environment
variables (or a `.env` file in the working directory).
"""

from __future__ import annotations

import dataclasses
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.ml.interactions import TrainParams

# The one default of every training tunable lives on TrainParams; Settings reads it from there.
_ML = {f.name: f.default for f in dataclasses.fields(TrainParams)}

# Standard event names -> (family, weight), API.md section 4.
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
    recent_activity_len: int = Field(default=50, description="per-user interactions kept in Redis")
    served_retention_days: int = Field(
        default=180, ge=0, description="served-recommendation log rows older than this are deleted; 0 keeps them"
    )

    # --- learning (defaults are TrainParams', documented in app/ml/interactions.py) -------
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    family_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    decay_half_life_days: float = _ML["decay_half_life_days"]
    trending_half_life_hours: float = _ML["trending_half_life_hours"]
    session_gap_minutes: float = _ML["session_gap_minutes"]
    als_factors: int = _ML["factors"]
    als_iterations: int = _ML["iterations"]
    als_regularization: float = _ML["regularization"]
    als_alpha: float = _ML["alpha"]
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
    # A serving process keeps at most this many orgs' models in memory (least recently used out).
    model_cache_orgs: int = 64

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
        """The configured secret, else one made at first start and kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # O_EXCL: if two processes race at first start, both end up reading the winner's secret.
        try:
            with open(path, "x") as fh:
                fh.write(secret)
            path.chmod(0o600)
        except FileExistsError:
            return path.read_text().strip()
        return secret


@lru_cache
def get_settings() -> Settings:
    return Settings()


def train_params(settings: Settings, *, now: float) -> TrainParams:
    """The training tunables of these settings, for one run at `now`."""
    return TrainParams(
        now=now,
        factors=settings.als_factors,
        iterations=settings.als_iterations,
        regularization=settings.als_regularization,
        alpha=settings.als_alpha,
        decay_half_life_days=settings.decay_half_life_days,
        trending_half_life_hours=settings.trending_half_life_hours,
        session_gap_minutes=settings.session_gap_minutes,
        knn_neighbours=settings.knn_neighbours,
        ease_max_items=settings.ease_max_items,
        ease_lambda=settings.ease_lambda,
        pair_shrinkage=settings.pair_shrinkage,
        pair_half_life_days=settings.pair_half_life_days,
        pair_lift_weight=settings.pair_lift_weight,
        max_basket_items=settings.max_basket_items,
        trending_prior_events=settings.trending_prior_events,
        content_pair_budget=settings.content_pair_budget,
        exposure_prior_events=settings.exposure_prior_events,
    )
