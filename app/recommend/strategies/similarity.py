"""Item-to-item strategies: similar, frequently-bought-together, frequently-consumed-together."""

from __future__ import annotations

import numpy as np

from app.ml.content import item_tokens, vectorise
from app.recommend.ranking import RankContext, Ranking, neighbour_blend

# Behaviour says what people treat as alternatives; attributes cover items nobody touched yet.
_BEHAVIOURAL_SHARE = 0.7


def similar(ctx: RankContext) -> Ranking | None:
    item = ctx.context_item
    if ctx.models is None or item is None:
        return None
    if not ctx.in_model(item):
        return _new_item_by_content(ctx, item)
    behavioural = neighbour_blend(ctx.models, [(item, 1.0)], [("item_neighbors", 1.0)]).as_dict()
    content = neighbour_blend(ctx.models, [(item, 1.0)], [("content_neighbors", 1.0)]).as_dict()
    behavioural.pop(item, None)
    content.pop(item, None)
    if not behavioural:
        return Ranking.from_weights(content, reason="content_similar", mode="semantic")
    blended = {i: _BEHAVIOURAL_SHARE * w for i, w in behavioural.items()}
    for i, w in content.items():
        blended[i] = blended.get(i, 0.0) + (1 - _BEHAVIOURAL_SHARE) * w
    return Ranking.from_weights(blended, reason="similar_item")


def frequently_bought_together(ctx: RankContext) -> Ranking | None:
    return _pairs(ctx, "copurchase", reason="bought_together")


def frequently_consumed_together(ctx: RankContext) -> Ranking | None:
    return _pairs(ctx, "coengagement", reason="consumed_together")


def _pairs(ctx: RankContext, table: str, *, reason: str) -> Ranking | None:
    item = ctx.context_item
    if ctx.models is None or not ctx.in_model(item):
        return None
    assert item is not None
    blend = neighbour_blend(ctx.models, [(item, 1.0)], [(table, 1.0)]).without([item])
    return blend.kept(blend.sums > 0).ranking(reason=reason)


def _new_item_by_content(ctx: RankContext, item: int) -> Ranking | None:
    """An item upserted after the last train: place it in the trained TF-IDF space by its
    attributes, so it has neighbours right away (API.md: brand-new items have neighbours)."""
    models = ctx.models
    assert models is not None
    tokens = item_tokens(ctx.catalog.item_types[item], ctx.catalog.attributes[item])
    columns, weights = vectorise(models.content_token_index, models.content_idf, tokens)
    if columns.size == 0:
        return None
    by_token = models.content_by_token
    scores = np.zeros(models.n_items)
    for column, weight in zip(columns.tolist(), weights.tolist()):
        start, stop = by_token.indptr[column], by_token.indptr[column + 1]
        scores[by_token.indices[start:stop]] += weight * by_token.data[start:stop]
    if not (scores > 0).any():
        return None
    return Ranking(None, np.where(scores > 0, np.minimum(scores, 1.0), -np.inf), "content_similar", mode="semantic")
