"""buy-again: items the user bought before and is due to buy again (repeat-purchase cycles)."""

from __future__ import annotations

import numpy as np

from app.ml.repeat import due_scores
from app.recommend.ranking import RankContext, Ranking, row


def buy_again(ctx: RankContext) -> Ranking | None:
    models = ctx.models
    last: dict[int, float] = {}
    counts: dict[int, float] = {}
    if models is not None and ctx.model_user is not None:
        cols, values = row(models.purchase_counts, ctx.model_user)
        ts_cols, ts_values = row(models.last_purchase_ts, ctx.model_user)
        counts.update(zip(cols.tolist(), values.tolist()))
        last.update(zip(ts_cols.tolist(), ts_values.tolist()))
    trained_at = models.trained_at if models is not None else float("-inf")
    for index, activity in ctx.recent_items():
        if activity.event_name == "purchase" and activity.timestamp > trained_at:
            counts[index] = counts.get(index, 0.0) + 1.0
            last[index] = max(last.get(index, 0.0), activity.timestamp)
    if not counts:
        return None
    indices = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    interval = np.full(indices.size, np.nan)
    if models is not None:
        in_model = indices < models.n_items
        interval[in_model] = models.repurchase_interval[indices[in_model]]
    scores = due_scores(
        np.array([last.get(i, 0.0) for i in indices.tolist()]),
        np.array([counts[i] for i in indices.tolist()]),
        interval,
        ctx.now,
    )
    return Ranking(indices, scores.astype(np.float64), "buy_again")
