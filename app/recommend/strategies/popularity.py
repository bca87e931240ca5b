"""Non-personal strategies: trending, popular, category-popular, new-arrivals.

Twin of app/ml/popularity.py, which builds the vectors these rank with.
"""

from __future__ import annotations

import numpy as np

from app.recommend.catalog import value_key
from app.recommend.ranking import RankContext, Ranking, ReusedDense


def _dense(ctx: RankContext, name: str) -> np.ndarray | None:
    """The model's vector with non-candidates (no activity) at -inf; None when all are."""
    models = ctx.models
    if models is None:
        return None

    def build() -> np.ndarray | bool:
        values = getattr(models, name).astype(np.float64) * models.exposure_penalty
        return np.where(values > 0, values, -np.inf) if (values > 0).any() else False

    dense = ctx.memoised(f"dense:{name}", build)
    return dense if dense is not False else None


def _vector(ctx: RankContext, name: str, *, reason: str) -> Ranking | None:
    dense = _dense(ctx, name)
    if dense is None:
        return None
    return Ranking(None, dense, reason, reused=ctx.memoised(f"reused:{name}", lambda: ReusedDense.of(dense)))


def trending(ctx: RankContext) -> Ranking | None:
    return _vector(ctx, "trending", reason="trending")


def popular(ctx: RankContext) -> Ranking | None:
    return _vector(ctx, "popularity", reason="popular")


def category_popular(ctx: RankContext) -> Ranking | None:
    """The category's items by popularity: a sparse ranking of just its members (a category of
    a 1M-item catalog holds ~2% of it), found in a per-snapshot grouping of items by category."""
    dense = _dense(ctx, "popularity")
    if dense is None or ctx.category is None:
        return None
    column = ctx.catalog.column("category")
    code = column.vocab.get(value_key(ctx.category))  # type: ignore[arg-type]
    if code is None:
        return None

    def build() -> tuple[np.ndarray, np.ndarray]:
        # Popularity candidates grouped by category code (ascending item index within one).
        codes = column.codes[: len(dense)]
        candidates = np.flatnonzero(dense[: len(codes)] > -np.inf)
        grouped = candidates[np.argsort(codes[candidates], kind="stable")]
        return grouped, codes[grouped]

    grouped, grouped_codes = ctx.memoised("category-members", build)
    members = grouped[np.searchsorted(grouped_codes, code, "left"):np.searchsorted(grouped_codes, code, "right")]
    if members.size == 0:
        return None
    return Ranking(members.astype(np.int64), dense[members], "category_popular")


# Traction only breaks ties: it may move an item by at most this many seconds of newness.
_TRACTION_S = 1e-3


def new_arrivals(ctx: RankContext) -> Ranking | None:
    """Newest items by created_at; ties (e.g. one bulk load) broken by early traction (popularity).

    No sort here: the service orders only the page it needs, so counting this fallback's
    candidates stays linear for every request whose chain ends in it.
    """
    catalog, models = ctx.catalog, ctx.models

    def build() -> np.ndarray | bool:
        dated = catalog.active & ~np.isnan(catalog.created_at)
        if not dated.any():
            return False
        created = np.where(dated, catalog.created_at, np.nan)
        newness = created - np.nanmin(created)
        span = float(np.nanmax(newness))
        if models is not None:
            m = min(models.n_items, len(newness))
            newness[:m] += _TRACTION_S * models.popularity[:m]
        return np.where(dated, 0.05 + 0.95 * newness / (span + _TRACTION_S), -np.inf)

    dense = ctx.memoised("dense:new-arrivals", build)
    if dense is False:
        return None
    reused = ctx.memoised("reused:new-arrivals", lambda: ReusedDense.of(dense))
    return Ranking(None, dense, "new_arrival", reused=reused)
