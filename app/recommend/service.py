"""Answer one recommendation: walk the strategy's fallback chain, filter, paginate, normalise.

The full ranking a client pages through is: the strategy's own candidates (best first), then
each fallback's candidates not already listed. Pages are slices of that one ordering, with
ties broken by catalog position, so pages never overlap; total_count counts all of it.
Scores are normalised per stage into a band below the previous stage's last score, so they
stay in [0, 1] and non-increasing down the whole list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.recommend.filters import Filters
from app.recommend.ranking import RankContext
from app.recommend.registry import ITEM, ITEM_OR_CATEGORY, Strategy, fallback_chain

_BAND_STEP = 0.95  # a fallback's best score is this fraction of the previous stage's last one


@dataclass(frozen=True)
class Page:
    indices: list[int]
    scores: list[float]
    reasons: list[str]
    total_count: int
    mode: str  # "fallback" when the strategy itself had nothing and a fallback answered


def rank(strategy: Strategy, ctx: RankContext, filters: Filters, *, page: int, limit: int) -> Page:
    catalog = ctx.catalog
    n = len(catalog)
    allowed = catalog.active & filters.mask(catalog) if not filters.empty else catalog.active
    taken = np.zeros(n, dtype=bool)
    if ctx.context_item is not None and strategy.requires in (ITEM, ITEM_OR_CATEGORY):
        taken[ctx.context_item] = True  # item-to-item answers never contain the item itself
    need = page * limit
    indices: list[int] = []
    scores: list[float] = []
    reasons: list[str] = []
    total = 0
    cap = 1.0
    mode = "fallback"
    for position, stage in enumerate(fallback_chain(strategy)):
        ranking = stage.rank(ctx)
        if ranking is None:
            continue
        if ranking.exclude is not None and position == 0:
            excluded = ranking.exclude[(ranking.exclude >= 0) & (ranking.exclude < n)]
            taken[excluded] = True
        idx, raw = ranking.indices, ranking.scores
        labels = ranking.reasons
        valid = (idx >= 0) & (idx < n)
        valid[valid] = allowed[idx[valid]] & ~taken[idx[valid]] & np.isfinite(raw[valid])
        idx, raw = idx[valid], raw[valid]
        labels = labels[valid] if labels is not None else None
        if idx.size == 0:
            continue
        if position == 0:
            mode = ranking.mode or stage.mode
        total += idx.size
        taken[idx] = True
        if len(indices) >= need:
            continue
        order = top_order(raw, idx, need - len(indices))
        final = cap * normalise(raw)[order]
        indices.extend(idx[order].tolist())
        scores.extend(final.tolist())
        reasons.extend(labels[order].tolist() if labels is not None else [ranking.reason] * order.size)
        cap = float(final[-1]) * _BAND_STEP
    start = (page - 1) * limit
    return Page(
        indices=indices[start:need],
        scores=[round(min(max(s, 0.0), 1.0), 6) for s in scores[start:need]],
        reasons=reasons[start:need],
        total_count=total,
        mode=mode,
    )


def top_order(scores: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best by (score desc, catalog index asc): deterministic across pages."""
    n = scores.size
    if k >= n:
        return np.lexsort((indices, -scores))
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    ties_in = np.flatnonzero(scores >= threshold)  # everything tied at the cut competes by index
    return ties_in[np.lexsort((indices[ties_in], -scores[ties_in]))][:k]


def normalise(scores: np.ndarray) -> np.ndarray:
    """Into (0, 1]: by the maximum for non-negative scores, else min-max with a small floor."""
    high, low = float(scores.max()), float(scores.min())
    if low >= 0 and high > 0:
        return scores / high
    if high > low:
        return 0.05 + 0.95 * (scores - low) / (high - low)
    return np.ones_like(scores)
