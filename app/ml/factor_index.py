"""The exact best items for a user vector without scoring the whole catalog.

`personalized` ranks items by `demote(item_factors @ user)`. No item can score above
`keep_i * |y_i| * |u|` (Cauchy-Schwarz; `keep_i` is what the exposure demotion leaves of a
positive score), so with the items sorted by that bound, best first, a scan can stop as soon
as k candidates beat the bound of the next unscanned item: nothing after it can enter the
top k, ties included. ALS gives the items people engage with the large norms, so on the
benchmark's 100k catalog the first chunk (1,024 items) settles the median user (the exact full
product reads all 12.8 MB of factors per request). The worst case (a narrow filter, a taste
that only reaches the tail) scans everything, in a few growing chunks.

The same scan ranks `max(score, 0) * w_i` for per-item weights w_i in [0, 1] (price-optimized's
price-band multiplier): a weight only lowers a positive score, so the bound still holds and
the weights are computed for the scanned items only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from app.ml.topk import top_order

# Float32 products round (relatively ~1e-6 at 64 factors); the margin keeps every bound above
# any score the product can return, so the stop rule never cuts a true top-k item.
_MARGIN = 1e-4
_FIRST_CHUNK = 1024
# A scan that has read as many rows as the filter passes items without settling (a category
# and a price cap on a big catalog: k of them turn up only deep in the bound order) stops and
# scores exactly the filter's items instead: per row read, the scan (its masks, concatenations
# and partial sorts) costs about what reading one filtered row directly does, so it never
# costs much more than either would alone.
_GATHER_COST = 1


def demote(scores: np.ndarray, demotion: np.ndarray | None) -> np.ndarray:
    """Model-wide scores with the exposure demotion (OrgModels.exposure_demotion) applied; works
    for negative scores too (a demoted item always moves down: s - demotion * |s|)."""
    if demotion is None:
        return scores
    demoted = np.abs(scores)  # one catalog-sized temporary, the rest in place
    demoted *= demotion[: len(scores)]
    np.subtract(scores, demoted, out=demoted)
    return demoted


# Item indices -> a weight in [0, 1] per item (see FactorIndex.top).
Weights = Callable[[np.ndarray], np.ndarray]


class TopItems(NamedTuple):
    items: np.ndarray  # item indices, best first (score desc, index asc)
    scores: np.ndarray  # their demoted scores, float32
    scanned: int  # how many items were scored to prove it


class FactorIndex:
    """Item factors in descending order of their score bound per unit of user norm."""

    def __init__(self, item_factors: np.ndarray, demotion: np.ndarray | None) -> None:
        norms = np.linalg.norm(item_factors.astype(np.float64), axis=1)
        demoted = np.zeros(len(norms)) if demotion is None else demotion.astype(np.float64)
        bound = norms * (1.0 - demoted)
        self.order = np.argsort(-bound, kind="stable")  # scan position -> item index
        # In item order too (the model's arrays, not copies): a filter's items, ascending, are
        # read front to back there, which the memory prefetcher follows (a scattered gather of
        # 20k rows from 128 MB costs several times more).
        self.item_factors, self.item_demotion = item_factors, demotion
        self.factors = np.ascontiguousarray(item_factors[self.order])
        self.demotion = None if demotion is None else np.ascontiguousarray(demotion[self.order])
        self.bound = bound[self.order] * (1.0 + _MARGIN)
        # No demoted score is below -(1 + demotion_i) * |y_i| * |u|: the normalisation's floor.
        self.floor_per_norm = float(np.max(norms * (1.0 + demoted), initial=0.0)) * (1.0 + _MARGIN)

    @property
    def n_items(self) -> int:
        return int(self.order.size)

    def lowest_possible(self, user: np.ndarray) -> float:
        return -self.floor_per_norm * float(np.linalg.norm(user.astype(np.float64)))

    def top(
        self, user: np.ndarray, ok: np.ndarray, k: int, *, weights: Weights | None = None
    ) -> TopItems:
        """The k best items i with ok[i], by (score desc, item index asc), and their scores.

        `ok` covers the model's items. Chunks are laid out the same way for every call, so an
        item's score is the same float whatever k or the filters are (pages never disagree).
        With `weights` (item indices -> weights in [0, 1]) an item's score is
        max(demoted score, 0) * its weight.
        """
        scan_budget = _GATHER_COST * int(np.count_nonzero(ok))
        norm = float(np.linalg.norm(user.astype(np.float64)))
        picked = np.empty(0, dtype=np.int64)
        scores = np.empty(0, dtype=np.float32)
        start, size, n = 0, _FIRST_CHUNK, self.n_items
        stop = 0
        while start < n:
            if start >= scan_budget:
                return self._top_of(np.flatnonzero(ok), user, k, weights, scanned=start)
            stop = min(start + size, n)
            items = self.order[start:stop]
            keep = ok[items]
            if keep.any():
                chunk = self.factors[start:stop] @ user
                if self.demotion is not None:
                    chunk = demote(chunk, self.demotion[start:stop])
                kept, chunk = items[keep], chunk[keep]
                if weights is not None:
                    chunk = (np.maximum(chunk, 0) * weights(kept)).astype(np.float32)
                picked = np.concatenate([picked, kept])
                scores = np.concatenate([scores, chunk])
                if picked.size > k:
                    best = top_order(scores, picked, k)
                    picked, scores = picked[best], scores[best]
            if picked.size >= k and stop < n and float(scores.min()) > self.bound[stop] * norm:
                break
            start, size = stop, size * 2
        final = top_order(scores, picked, min(k, picked.size))
        return TopItems(picked[final], scores[final], stop)

    def _top_of(
        self, items: np.ndarray, user: np.ndarray, k: int, weights: Weights | None, *, scanned: int
    ) -> TopItems:
        """The k best of these items, each scored (a narrow filter's candidates); `scanned`:
        the rows the scan read before."""
        scores = self.item_factors[items] @ user
        if self.item_demotion is not None:
            scores = demote(scores, self.item_demotion[items])
        if weights is not None:
            scores = (np.maximum(scores, 0) * weights(items)).astype(np.float32)
        final = top_order(scores, items, min(k, items.size))
        return TopItems(items[final], scores[final], scanned + int(items.size))
