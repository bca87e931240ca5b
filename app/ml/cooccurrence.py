"""Items that go together: co-purchase, co-engagement and in-session transitions.

A basket is an order (co-purchase) or a session (co-engagement). With B the baskets x items
incidence matrix, B^T B holds every pair's co-count n_ab; n_a is the number of baskets with a,
N the number of baskets. Each basket counts 0.5 ** (age / pair_half_life): what sells together
follows the season (Christmas lights go with wrapping paper in November), so on Online Retail
recency-weighted counts find more of a basket than all-time counts (docs/benchmarks.md).
The pair score, with w = TrainParams.pair_lift_weight:

    conf = n_ab / (n_a + s)                      P(b | a), shrunk toward 0
    lift = (n_ab + s) / (n_a * n_b / N + s)      observed / expected, shrunk toward 1
    score = conf * (1 - w / lift)   (0 if lift <= 1)

w = 1 gives conf * (1 - 1/lift), which is P(b|a) - P(b) for unshrunk values: how much more
likely b becomes when a is in the basket. A small w ranks mainly by P(b|a), what a shopper
who takes a most often takes too, which finds far more of the real basket, while pairs that a
does not make more likely (lift <= 1) are dropped and, at equal P(b|a), the stronger
association still wins (B over bananas when both are always bought with A). Two rare items
seen together once score ~0.15 (s = 5, w = 0.1) against ~0.67 for a pair seen together in
every one of its 12 baskets. Scores lie in [0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.interactions import EncodedLog, pair_keys
from app.ml.topk import pairwise_top_k, pairwise_top_k_multi, top_k_per_row

# Events of the sessions ordered at once by transitions().
_SESSION_EVENTS = 5_000_000


def assign_sessions(
    users: np.ndarray, timestamps: np.ndarray, session_codes: np.ndarray, gap_s: float
) -> np.ndarray:
    """A session number per event (0..S-1, int32).

    Events carrying a session id (`session_codes` >= 0, InteractionLog.sessions) form one
    session per (user, session id). The others are split per user by time: a pause longer
    than gap_s starts a new session.
    """
    sessions = np.empty(len(users), dtype=np.int32)
    tagged = session_codes >= 0
    n_sids = int(session_codes.max()) + 1 if session_codes.size else 0
    _, tagged_sessions = np.unique(pair_keys(users[tagged], session_codes[tagged], n_sids), return_inverse=True)
    sessions[tagged] = tagged_sessions
    offset = int(tagged_sessions.max()) + 1 if tagged_sessions.size else 0
    del tagged_sessions

    untagged = np.flatnonzero(~tagged)
    order = untagged[np.lexsort((timestamps[untagged], users[untagged]))]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (users[order][1:] != users[order][:-1]) | (np.diff(timestamps[order]) > gap_s)
    sessions[order] = offset + np.cumsum(starts) - 1
    return sessions


@dataclass(frozen=True, eq=False)
class Baskets:
    """What the pair statistics need from a set of baskets: the baskets that can form a pair
    (2 to max_items distinct items; a row holds its basket's weight on each of its items), and
    the totals over every basket kept (single-item ones count towards n_a and N)."""

    paired: csr_matrix  # baskets x items
    n_baskets: float  # N: the summed weights of the baskets
    item_counts: np.ndarray  # n_a: per item, the summed weights of the baskets that hold it


def basket_incidence(
    baskets: np.ndarray,
    items: np.ndarray,
    n_items: int,
    max_items: int,
    weights: np.ndarray | None = None,
) -> Baskets:
    """The baskets of these (basket, item) events, each weighing 1.0, or with per-event
    `weights` the largest of its events' (its newest event's decay). Baskets with more than
    max_items distinct items are dropped.

    Basket numbers that are already small non-negative integers (sessions) are rows as they
    are: rows of numbers no event has stay empty, which changes nothing, and tens of millions
    of basket numbers need no sorting. Only the paired baskets are kept past this function."""
    baskets = np.asarray(baskets)
    dense = baskets.size == 0 or (int(baskets.min()) >= 0 and int(baskets.max()) < 4 * baskets.size + 1_000_000)
    basket_rows = baskets if dense else np.unique(baskets, return_inverse=True)[1]
    n_rows = int(basket_rows.max()) + 1 if basket_rows.size else 0
    incidence = csr_matrix((np.ones(len(items), np.float32), (basket_rows, items)), shape=(n_rows, n_items))
    incidence.sum_duplicates()  # an item twice in one basket is still one co-occurrence
    sizes = np.diff(incidence.indptr)
    if weights is None:
        basket_weight = np.ones(n_rows)
    else:
        basket_weight = np.zeros(n_rows, np.float32)
        np.maximum.at(basket_weight, basket_rows, np.asarray(weights, dtype=np.float32))
        basket_weight = basket_weight.astype(np.float64)
    del basket_rows
    kept = (sizes >= 1) & (sizes <= max_items)
    n_baskets = float(basket_weight[kept].sum())
    item_counts = np.bincount(incidence.indices, weights=np.repeat(np.where(kept, basket_weight, 0.0), sizes),
                              minlength=n_items) if incidence.nnz else np.zeros(n_items)
    paired_rows = np.flatnonzero((sizes >= 2) & (sizes <= max_items))
    paired = incidence[paired_rows]
    paired.data = np.repeat(basket_weight[paired_rows], sizes[paired_rows])
    return Baskets(csr_matrix(paired), n_baskets, item_counts)


def pair_scores(
    baskets: Baskets,
    *,
    k: int,
    shrinkage: float,
    lift_weight: float,
    allowed_neighbours: np.ndarray | None = None,
    with_counts: bool = False,
) -> tuple[csr_matrix, csr_matrix | None]:
    """(scored top-k, raw co-count top-k or None), items x items float32, never i -> i.

    The raw co-count table ignores the weights: it is the naive "bought together N times"
    baseline for evaluation.
    """
    n_baskets, basket_count, paired = baskets.n_baskets, baskets.item_counts, baskets.paired
    # The same entries as ones, sharing paired's index arrays (no copy of them).
    pattern = csr_matrix((np.ones(paired.nnz), paired.indices, paired.indptr), shape=paired.shape)
    item_baskets = paired.T.tocsr()  # weighted on this side only: (B^T W) B sums basket weights

    def added_value(rows: np.ndarray, cols: np.ndarray, together: np.ndarray) -> np.ndarray:
        n_a, n_b = basket_count[rows], basket_count[cols]
        confidence = together / (n_a + shrinkage)
        lift = (together + shrinkage) / (n_a * n_b / n_baskets + shrinkage)
        return np.where(lift > 1.0, confidence * np.maximum(1.0 - lift_weight / lift, 0.0), 0.0)

    def raw_count(rows: np.ndarray, cols: np.ndarray, together: np.ndarray) -> np.ndarray:
        return together

    if not with_counts:
        return pairwise_top_k(item_baskets, pattern, k, added_value, allowed_columns=allowed_neighbours), None
    if np.all(paired.data == 1.0):  # unweighted: one product serves both tables
        scored, counts = pairwise_top_k_multi(
            item_baskets, pattern, k, [added_value, raw_count], allowed_columns=allowed_neighbours
        )
        return scored, counts
    scored = pairwise_top_k(item_baskets, pattern, k, added_value, allowed_columns=allowed_neighbours)
    counts = pairwise_top_k(pattern.T.tocsr(), pattern, k, raw_count, allowed_columns=allowed_neighbours)
    return scored, counts


def purchase_baskets(encoded: EncodedLog, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(basket key, item) per purchase event: the order when known, else the session."""
    log = encoded.log
    bought = np.flatnonzero(log.is_purchase)
    order_codes = log.orders[bought]
    n_orders = int(order_codes.max()) + 1 if order_codes.size else 0
    has_order = order_codes >= 0
    keys = np.empty(len(bought), dtype=np.int64)
    # The user is part of the order key: an order id reused across users is not one basket.
    _, order_keys = np.unique(
        pair_keys(encoded.users[bought][has_order], order_codes[has_order], n_orders), return_inverse=True
    )
    keys[has_order] = order_keys
    keys[~has_order] = len(bought) + sessions[bought][~has_order]
    return keys, encoded.items[bought]


def transitions(
    encoded: EncodedLog,
    sessions: np.ndarray,
    *,
    k: int,
    allowed_neighbours: np.ndarray | None = None,
) -> csr_matrix:
    """items x items float32: P(next distinct item is b | current item is a) within sessions.

    Positive-weight events only (a remove is not a step forward); repeats of the same item in
    a row collapse into one step. Sessions are ordered a range of session numbers at a time
    (steps never cross sessions), so the sort keys of a big log are never all in memory.
    """
    log = encoded.log
    n_items = encoded.n_items
    positive = log.weights > 0
    n_sessions = int(sessions.max()) + 1 if sessions.size else 0
    per_part = max(1, int(n_sessions * _SESSION_EVENTS / max(len(log), 1)))
    counts = csr_matrix((n_items, n_items))
    for first in range(0, n_sessions, per_part):
        steps = np.flatnonzero(positive & (sessions >= first) & (sessions < first + per_part))
        order = steps[np.lexsort((steps, log.timestamps[steps], sessions[steps]))]
        session, item = sessions[order], encoded.items[order]
        fresh = np.ones(len(order), dtype=bool)
        fresh[1:] = (session[1:] != session[:-1]) | (item[1:] != item[:-1])
        session, item = session[fresh], item[fresh]
        follows = session[1:] == session[:-1]
        counts = counts + csr_matrix(
            (np.ones(int(follows.sum())), (item[:-1][follows], item[1:][follows])), shape=(n_items, n_items)
        )
    totals = np.asarray(counts.sum(axis=1)).ravel()  # before masking: a true probability
    row_of_entry = np.repeat(np.arange(n_items), np.diff(counts.indptr))
    counts.data = counts.data / totals[row_of_entry]
    if allowed_neighbours is not None:
        counts.data[~allowed_neighbours[counts.indices]] = 0.0
    return top_k_per_row(counts, k)
