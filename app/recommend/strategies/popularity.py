"""Non-personal strategies: trending, popular, category-popular, new-arrivals.

Twin of app/ml/popularity.py, which builds the vectors these rank with.
"""

from __future__ import annotations

import numpy as np

from app.recommend.catalog import value_key
from app.recommend.ranking import RankContext, Ranking


def _vector(ctx: RankContext, name: str, *, reason: str) -> Ranking | None:
    if ctx.models is None:
        return None
    values = getattr(ctx.models, name).astype(np.float64)
    indices = np.flatnonzero(values > 0)
    if indices.size == 0:
        return None
    return Ranking(indices, values[indices], reason)


def trending(ctx: RankContext) -> Ranking | None:
    return _vector(ctx, "trending", reason="trending")


def popular(ctx: RankContext) -> Ranking | None:
    return _vector(ctx, "popularity", reason="popular")


def category_popular(ctx: RankContext) -> Ranking | None:
    base = popular(ctx)
    if base is None or ctx.category is None:
        return None
    column = ctx.catalog.column("category")
    code = column.vocab.get(value_key(ctx.category))  # type: ignore[arg-type]
    if code is None:
        return None
    in_category = column.codes[base.indices] == code
    if not in_category.any():
        return None
    return Ranking(base.indices[in_category], base.scores[in_category], "category_popular")


# Traction only breaks ties: it may move an item by at most this many seconds of newness.
_TRACTION_S = 1e-3


def new_arrivals(ctx: RankContext) -> Ranking | None:
    """Newest items by created_at; ties (e.g. one bulk load) broken by early traction (popularity).

    No sort here: the service orders only the page it needs, so counting this fallback's
    candidates stays linear for every request whose chain ends in it.
    """
    catalog = ctx.catalog
    indices = np.flatnonzero(catalog.active & ~np.isnan(catalog.created_at))
    if indices.size == 0:
        return None
    created = catalog.created_at[indices]
    newness = created - created.min()
    span = float(newness.max())
    if ctx.models is not None:
        in_model = indices < ctx.n_model
        newness[in_model] += _TRACTION_S * ctx.models.popularity[indices[in_model]]
    scale = span + _TRACTION_S
    return Ranking(indices, 0.05 + 0.95 * newness / scale, "new_arrival")
