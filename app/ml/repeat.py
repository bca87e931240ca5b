"""Buy-again cycles and price bands.

A purchase "occasion" is one (user, item) purchase; purchase events of the same pair closer
than the session gap (one event per unit, a retried checkout) are the same occasion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.interactions import CatalogSnapshot, EncodedLog, pair_keys

# Width (in log of elapsed / cycle) of the due curve: it rises steeply toward the usual
# cycle (half a cycle is early) and falls slowly after it (overdue is still likely).
DUE_SPREAD_EARLY = 0.35
DUE_SPREAD_LATE = 0.8
# Score of an item bought before whose cycle nobody has shown yet: below a due item,
# above nothing.
UNKNOWN_CYCLE_SCORE = 0.25
# One observed price is not a band: a user's spread is at least +-20%.
MIN_LOG_PRICE_SPREAD = math.log(1.2)
# Events per slice of user_price_band's sums.
_SLICE_EVENTS = 4_000_000


@dataclass(frozen=True)
class PurchaseHistory:
    counts: csr_matrix  # users x items float32: purchase occasions
    last_purchase_ts: csr_matrix  # users x items float64: unix s of the last occasion
    repurchase_interval: np.ndarray  # items float64: median seconds between occasions, NaN unknown


def purchase_history(encoded: EncodedLog, same_occasion_s: float) -> PurchaseHistory:
    log = encoded.log
    n_users, n_items = encoded.n_users, encoded.n_items
    bought = np.flatnonzero(log.is_purchase)
    pair = pair_keys(encoded.users[bought], encoded.items[bought], n_items)
    order = np.lexsort((log.timestamps[bought], pair))
    pair, ts = pair[order], log.timestamps[bought][order]
    new_pair = np.ones(len(pair), dtype=bool)
    new_pair[1:] = pair[1:] != pair[:-1]
    new_occasion = new_pair.copy()
    new_occasion[1:] |= np.diff(ts) > same_occasion_s
    # Occasions keep their first timestamp; the gaps between them are repurchase intervals.
    pair, ts, new_pair = pair[new_occasion], ts[new_occasion], new_pair[new_occasion]

    pairs, first, counts = np.unique(pair, return_index=True, return_counts=True)
    last_ts = ts[first + counts - 1]
    rows, cols = pairs // max(n_items, 1), pairs % max(n_items, 1)
    shape = (n_users, n_items)
    count_matrix = csr_matrix((counts.astype(np.float32), (rows, cols)), shape=shape)
    last_matrix = csr_matrix((last_ts, (rows, cols)), shape=shape, dtype=np.float64)

    repeat = ~new_pair  # an occasion that follows an earlier one of the same pair
    intervals = ts[repeat] - ts[np.flatnonzero(repeat) - 1]
    interval_items = pair[repeat] % max(n_items, 1)
    return PurchaseHistory(count_matrix, last_matrix, _median_by_group(interval_items, intervals, n_items))


def _median_by_group(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    medians = np.full(n_groups, np.nan)
    if values.size == 0:
        return medians
    order = np.lexsort((values, groups))
    groups, values = groups[order], values[order]
    keys, start, count = np.unique(groups, return_index=True, return_counts=True)
    medians[keys] = (values[start + (count - 1) // 2] + values[start + count // 2]) / 2.0
    return medians


def due_scores(
    last_purchase_ts: np.ndarray,
    purchase_counts: np.ndarray,
    repurchase_interval: np.ndarray,
    now: float,
) -> np.ndarray:
    """How due each of a user's bought items is, in [0, 1] (vectors aligned per item).

    With r = time since last purchase / the item's usual cycle: exp(-ln(r)^2 / 2 sigma^2),
    1 when exactly one cycle has passed. Times count / (count + 1): a habit seen more often is
    more certain. Items with no known cycle get UNKNOWN_CYCLE_SCORE times that certainty.
    """
    elapsed = np.maximum(now - np.asarray(last_purchase_ts, dtype=np.float64), 0.0)
    interval = np.asarray(repurchase_interval, dtype=np.float64)
    counts = np.asarray(purchase_counts, dtype=np.float64)
    known = np.isfinite(interval) & (interval > 0)
    ratio = np.divide(elapsed, interval, out=np.ones_like(elapsed), where=known)
    log_ratio = np.log(np.maximum(ratio, 1e-9))
    spread = np.where(log_ratio < 0, DUE_SPREAD_EARLY, DUE_SPREAD_LATE)
    timing = np.where(known, np.exp(-(log_ratio**2) / (2 * spread**2)), UNKNOWN_CYCLE_SCORE)
    return timing * counts / (counts + 1.0)


def parse_price(value: Any) -> float:
    """A positive finite price from an attribute value (number or numeric string), else NaN."""
    if isinstance(value, bool):
        return math.nan
    try:
        price = float(value)
    except (TypeError, ValueError):
        return math.nan
    return price if math.isfinite(price) and price > 0 else math.nan


def item_prices(catalog: CatalogSnapshot, item_ids: np.ndarray, encoded: EncodedLog) -> np.ndarray:
    """Per item (float64): attributes.price, else the geometric mean of prices seen in events."""
    catalog_price = {
        item_id: parse_price((attrs or {}).get("price"))
        for item_id, attrs in zip(catalog.item_ids.tolist(), catalog.attributes)
    }
    prices = np.fromiter(
        (catalog_price.get(i, math.nan) for i in item_ids.tolist()), np.float64, len(item_ids)
    )
    seen = encoded.log.prices
    priced = np.isfinite(seen) & (seen > 0)
    n = np.bincount(encoded.items[priced], minlength=len(item_ids))
    log_sum = np.bincount(encoded.items[priced], weights=np.log(seen[priced].astype(np.float64)),
                          minlength=len(item_ids))
    fill = np.isnan(prices) & (n > 0)
    prices[fill] = np.exp(log_sum[fill] / n[fill])
    return prices


def user_price_band(encoded: EncodedLog, item_price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user (float32): weighted mean and spread of log(price) over positive events, NaN if none.

    An event's price is its context.price, else the item's price; stronger events (purchase)
    weigh more, as they say more about what the user pays. The sums are taken a slice of events
    at a time: their float64 temporaries would be gigabytes on a big log.
    """
    log = encoded.log
    total = np.zeros(encoded.n_users)
    weighted = np.zeros(encoded.n_users)
    squared = np.zeros(encoded.n_users)
    for start in range(0, len(log), _SLICE_EVENTS):
        part = slice(start, start + _SLICE_EVENTS)
        seen = log.prices[part].astype(np.float64)
        price = np.where(np.isfinite(seen) & (seen > 0), seen, item_price[encoded.items[part]])
        use = (log.weights[part] > 0) & np.isfinite(price)
        users, weight = encoded.users[part][use], log.weights[part][use].astype(np.float64)
        log_price = np.log(price[use])
        total += np.bincount(users, weights=weight, minlength=encoded.n_users)
        weighted += np.bincount(users, weights=weight * log_price, minlength=encoded.n_users)
        squared += np.bincount(users, weights=weight * log_price**2, minlength=encoded.n_users)
    has = total > 0
    mean = np.full(encoded.n_users, np.nan)
    spread = np.full(encoded.n_users, np.nan)
    mean[has] = weighted[has] / total[has]
    second = squared[has] / total[has]
    spread[has] = np.maximum(np.sqrt(np.maximum(second - mean[has] ** 2, 0.0)), MIN_LOG_PRICE_SPREAD)
    return mean.astype(np.float32), spread.astype(np.float32)
