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

from app.ml.topk import top_order
from app.recommend.filters import Filters, interacted_indices
from app.recommend.ranking import FactorRanking, RankContext, Ranking, memoised_recent
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
    # Items still available to the answer: active, passing the filters, not listed yet.
    if filters.empty:
        available = catalog.active.copy()
    else:
        available = catalog.active & filters.cached_mask(catalog, ctx.memo)
    if ctx.context_item is not None and strategy.requires in (ITEM, ITEM_OR_CATEGORY):
        available[ctx.context_item] = False  # item-to-item answers never contain the item itself
    if filters.exclude_interacted is not None and ctx.user_id is not None:
        seen = interacted_indices(ctx, filters.exclude_interacted)
        available[seen[(seen >= 0) & (seen < n)]] = False
    page_out = _PageBuilder(need=page * limit)
    total = 0
    mode = "fallback"
    chain = fallback_chain(strategy)
    for position, stage in enumerate(chain):
        if position > 0 and page_out.missing <= 0:
            # The page is full: the stages left only add to total_count, and together they add
            # exactly the available items in the union of their candidates.
            total += int(np.count_nonzero(available & _candidates_union(chain[position:], ctx)))
            break
        ranking = stage.rank(ctx)
        if ranking is None:
            continue
        if ranking.exclude is not None and position == 0:
            available[ranking.exclude[(ranking.exclude >= 0) & (ranking.exclude < n)]] = False
        if isinstance(ranking, FactorRanking):
            count = _factor_stage(ranking, available, page_out)
        elif ranking.indices is None:
            count = _dense_stage(ranking, available, page_out)
        else:
            count = _sparse_stage(ranking, available, page_out)
        if count and position == 0:
            mode = ranking.mode or stage.mode
        total += count
    start = (page - 1) * limit
    return Page(
        indices=page_out.indices[start:],
        scores=[round(min(max(s, 0.0), 1.0), 6) for s in page_out.scores[start:]],
        reasons=page_out.reasons[start:],
        total_count=total,
        mode=mode,
    )


_UNIONS_KEPT = 64


def _candidates_union(stages: list[Strategy], ctx: RankContext) -> np.ndarray:
    """Every catalog item some of these stages would list (before filters), remembered per
    serving snapshot: for most requests counting the fallbacks then costs one mask AND."""

    def compute() -> np.ndarray:
        union = np.zeros(len(ctx.catalog), dtype=bool)
        for stage in stages:
            ranking = stage.rank(ctx)
            if ranking is None:
                continue
            if isinstance(ranking, FactorRanking):
                union[: ranking.index.n_items] = True
            elif ranking.indices is None:
                dense = ranking.scores[: len(union)]
                union[: len(dense)] |= dense > -np.inf
            else:
                idx = ranking.indices
                valid = (idx >= 0) & (idx < len(union)) & np.isfinite(ranking.scores)
                union[idx[valid]] = True
        return union

    key = (tuple(stage.name for stage in stages), ctx.category)
    return memoised_recent(ctx.memo, "fallback-unions", key, compute, kept=_UNIONS_KEPT)


class _PageBuilder:
    """The answer so far: stages append their best candidates, each in a lower score band."""

    def __init__(self, *, need: int) -> None:
        self.need = need
        self.indices: list[int] = []
        self.scores: list[float] = []
        self.reasons: list[str] = []
        self.cap = 1.0

    @property
    def missing(self) -> int:
        return self.need - len(self.indices)

    def extend(self, indices: np.ndarray, normalised: np.ndarray, reasons: list[str]) -> None:
        final = self.cap * normalised
        self.indices.extend(indices.tolist())
        self.scores.extend(final.tolist())
        self.reasons.extend(reasons)
        self.cap = float(final[-1]) * _BAND_STEP


def _dense_stage(ranking: Ranking, available: np.ndarray, out: _PageBuilder) -> int:
    raw = ranking.scores[: len(available)]
    m = len(raw)
    # What was derived once from the vector covers all of it; unusable if the catalog is shorter.
    reused = ranking.reused if ranking.scores.size == m else None
    ok = available[:m] & (reused.candidates if reused is not None else raw > -np.inf)  # drops NaN too
    count = int(np.count_nonzero(ok))
    if count and out.missing > 0:
        order = _dense_top(raw, ok, min(out.missing, count), count, reused.order if reused is not None else None)
        high = float(raw[order[0]])
        # The lowest candidate only matters when some go negative (normalise divides by the best
        # otherwise), and finding it costs ten plain mins: look for it only then.
        low = 0.0 if reused is not None and reused.nonnegative else float(raw.min())
        if not low >= 0:  # negative, -inf placeholders or NaN somewhere in the vector
            low = float(raw[ok].min()) if np.any(ok & (raw < 0)) else 0.0
        out.extend(order, normalise(raw[order].astype(np.float64), high=high, low=low), [ranking.reason] * order.size)
    available[:m] ^= ok  # ok is a subset of available: this takes it out, in one pass
    return count


def _factor_stage(ranking: FactorRanking, available: np.ndarray, out: _PageBuilder) -> int:
    """A dense stage whose scores are never all computed (see app/ml/factor_index.py). Scores
    are normalised by the best one (negative ones clip to 0), since the lowest is unknown."""
    n = ranking.index.n_items
    m = min(n, len(available))
    ok = available[:m]  # a view: every available model item is a candidate
    count = int(np.count_nonzero(ok))
    if count and out.missing > 0:
        if m < n:  # the catalog is realigned to the model, so only a stand-in catalog is shorter
            ok = np.concatenate([ok, np.zeros(n - m, dtype=bool)])
        picked, raw, _ = ranking.index.top(ranking.user, ok, min(out.missing, count), weights=ranking.weights)
        high = float(raw[0])
        # Weighted scores are never negative (see FactorIndex.top).
        low = 0.0 if high > 0 or ranking.weights is not None else ranking.index.lowest_possible(ranking.user)
        out.extend(picked, normalise(raw.astype(np.float64), high=high, low=low), [ranking.reason] * picked.size)
    available[:m] = False
    return count


_SHORTLIST_MIN = 256


def _dense_top(raw: np.ndarray, ok: np.ndarray, k: int, count: int, order: np.ndarray | None) -> np.ndarray:
    """top_order of the `count` candidates (`ok`) of a whole-catalog vector, without masking it.

    With the vector's precomputed `order` (ReusedDense.order), the answer is the first k candidates
    along it, which a prefix a few times k long usually holds. Without one, when candidates
    are most of the catalog, the best few hundred by raw score come first: if k candidates
    among them beat the worst of that shortlist, nothing outside it can enter the page (ties
    included). Otherwise (narrow filters, sparse vectors, NaN, big ties) only the candidates
    are ranked.
    """
    n = raw.size
    size = max(4 * k, _SHORTLIST_MIN)
    if order is not None:
        while True:
            head = order[:size]
            picks = head[ok[head]]
            if picks.size >= k or size >= order.size:
                return picks[:k]
            size *= 4
    if size < n and count * 4 >= n:
        shortlist = np.argpartition(-raw, size - 1)[:size]
        picks = shortlist[ok[shortlist]]
        if picks.size >= k:
            picked = picks[top_order(raw[picks], picks, k)]
            if raw[picked[-1]] > raw[shortlist].min():  # NaN compares False: rank the candidates
                return picked
    candidates = np.flatnonzero(ok)
    return candidates[top_order(raw[candidates], candidates, k)]


def _sparse_stage(ranking: Ranking, available: np.ndarray, out: _PageBuilder) -> int:
    assert ranking.indices is not None
    idx, raw = ranking.indices, ranking.scores
    valid = (idx >= 0) & (idx < len(available))
    valid[valid] = available[idx[valid]] & np.isfinite(raw[valid])
    idx, raw = idx[valid], raw[valid]
    if idx.size == 0:
        return 0
    if out.missing > 0:
        order = top_order(raw, idx, out.missing)
        labels = ranking.reasons[valid][order].tolist() if ranking.reasons is not None else [ranking.reason] * order.size
        out.extend(idx[order], normalise(raw[order], high=float(raw.max()), low=float(raw.min())), labels)
    available[idx] = False
    return int(idx.size)


def normalise(scores: np.ndarray, *, high: float, low: float) -> np.ndarray:
    """Into (0, 1] given the stage's best and worst candidate: by the maximum for non-negative
    scores, else min-max with a small floor (ALS dot products can be negative)."""
    if low >= 0 and high > 0:
        return scores / high
    if high > low:
        return 0.05 + 0.95 * (scores - low) / (high - low)
    return np.ones_like(scores)
