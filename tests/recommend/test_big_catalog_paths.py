"""Big-catalog paths that answer exactly what the whole-catalog rule does, without computing it:
price-optimized on ALS through the factor index (a weighted scan of a few chunks; taste, i.e.
personalized's score with negatives at 0, times the price-band multiplier), and
category-popular as a sparse ranking of the category's members."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson

from app.ml.factor_index import FactorIndex, demote
from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.recommend.catalog import Catalog
from app.recommend.filters import compile_filters
from app.recommend.ranking import FactorRanking, RankContext, memoised_recent
from app.recommend.registry import REGISTRY
from app.recommend.service import rank
from app.recommend.strategies.personalized import price_optimized
from app.settings import Settings
from tests.ml.conftest import DAY, NOW


def priced_world(n_users: int = 400, n_items: int = 3000, seed: int = 2) -> tuple[InteractionLog, CatalogSnapshot]:
    """Users with a taste cluster and a price level; prices known for most items."""
    rng = np.random.default_rng(seed)
    prices = np.round(np.exp(rng.normal(3.5, 1.0, n_items)), 2)
    cluster = np.arange(n_items) % 8
    users, items, names, times, paid = [], [], [], [], []
    for u in range(n_users):
        mine = np.flatnonzero((cluster == u % 8) & (np.abs(np.log(prices) - (2.5 + u % 3)) < 1.0))
        picks = rng.choice(mine if mine.size else np.arange(n_items), 10)
        for k, i in enumerate(picks.tolist()):
            bought = k % 3 == 0
            users.append(f"u{u}")
            items.append(f"i{i}")
            names.append("purchase" if bought else "view")
            times.append(NOW - rng.random() * 60 * DAY)
            paid.append(float(prices[i]) if bought else None)
    log = InteractionLog.build(user_ids=users, item_ids=items, event_names=names,
                               weights=[3.0 if n == "purchase" else 1.0 for n in names], timestamps=times,
                               prices=paid)
    attributes = [{"category": f"c{i % 7}", **({"price": float(p)} if i % 5 else {})}  # a fifth unpriced
                  for i, p in enumerate(prices)]
    return log, CatalogSnapshot.build([f"i{i}" for i in range(n_items)], attributes=attributes)


def test_price_optimized_on_als_scans_the_factor_index_and_matches_the_whole_catalog_rule():
    from workers.train_process import train_models

    log, snapshot = priced_world()
    settings = Settings.model_construct(model_search=False, personal_model="als")
    models, _ = train_models(log, snapshot, settings, now=NOW + DAY, version="v1")
    assert models.factor_index is not None
    rows = [(i, "product", "active", "{}", 0.0, 0.0) for i in snapshot.item_ids.tolist()]
    catalog = Catalog.build(rows, order=models.item_ids)
    compared = 0
    for u in range(0, 400, 7):
        ctx = RankContext(models=models, catalog=catalog, settings=settings, now=NOW + DAY, user_id=f"u{u}",
                          context_item=None, context_item_given=False, category=None)
        ranking = price_optimized(ctx)
        assert isinstance(ranking, FactorRanking) and ranking.weights is not None
        # The whole-catalog rule, computed here for every item.
        taste = np.maximum(demote(models.item_factors @ ranking.user, models.exposure_demotion), 0)
        expected = taste * ranking.weights(np.arange(models.n_items))
        expected[ranking.exclude] = -np.inf  # bought: never listed
        best = np.lexsort((np.arange(expected.size), -expected))[:20]
        page = rank(REGISTRY["price-optimized"], ctx, compile_filters(None), page=1, limit=20)
        got = np.asarray(page.indices)
        # The scan and the full product may round differently in the last bit: compare scores.
        np.testing.assert_allclose(expected[got], expected[best], rtol=1e-5)
        assert page.scores == sorted(page.scores, reverse=True) and page.scores[0] == 1.0
        compared += 1
    assert compared == 58


def test_a_weighted_scan_is_the_exact_top_k_of_the_weighted_scores():
    rng = np.random.default_rng(9)
    factors = rng.normal(size=(20_000, 16)).astype(np.float32) * rng.zipf(2.0, (20_000, 1)).astype(np.float32)
    demotion = rng.choice(np.float32([0, 0, 0.5]), size=20_000)
    index = FactorIndex(factors, demotion)
    weights = rng.uniform(0.15, 1.0, 20_000)
    ok = rng.random(20_000) > 0.1
    for _ in range(20):
        user = rng.normal(size=16).astype(np.float32)
        top = index.top(user, ok, 15, weights=lambda items: weights[items])
        full = np.maximum(demote(factors @ user, demotion), 0) * weights
        full[~ok] = -np.inf
        np.testing.assert_allclose(top.scores, np.sort(full)[::-1][:15], rtol=1e-5)
        assert ok[top.items].all()
        assert top.scanned < 20_000 or full.max() <= 0  # it stopped early: the point of it


def test_without_a_known_price_for_the_user_it_is_plain_personalized():
    from workers.train_process import train_models

    log, snapshot = priced_world()
    log = dataclasses.replace(log, prices=np.full(len(log), np.nan))
    snapshot = dataclasses.replace(snapshot, attributes=[{} for _ in range(len(snapshot))])
    settings = Settings.model_construct(model_search=False, personal_model="als")
    models, _ = train_models(log, snapshot, settings, now=NOW + DAY, version="v1")
    rows = [(i, "product", "active", "{}", 0.0, 0.0) for i in snapshot.item_ids.tolist()]
    catalog = Catalog.build(rows, order=models.item_ids)
    ctx = RankContext(models=models, catalog=catalog, settings=settings, now=NOW + DAY, user_id="u3",
                      context_item=None, context_item_given=False, category=None)
    ranking = price_optimized(ctx)
    assert isinstance(ranking, FactorRanking) and ranking.weights is None and ranking.mode == "behavioral"


def test_category_popular_lists_the_category_by_popularity_as_the_whole_catalog_rule_does():
    from workers.train_process import train_models

    log, snapshot = priced_world()
    settings = Settings.model_construct(model_search=False)
    models, _ = train_models(log, snapshot, settings, now=NOW + DAY, version="v1")
    rows = [(i, "product", "active", orjson.dumps(a).decode(), 0.0, 0.0)
            for i, a in zip(snapshot.item_ids.tolist(), snapshot.attributes)]
    catalog = Catalog.build(rows, order=models.item_ids)
    popularity = models.popularity.astype(np.float64) * models.exposure_penalty
    in_category = np.array([catalog.attributes[i].get("category") == "c3" for i in range(len(catalog))])
    expected_all = np.flatnonzero(in_category[: models.n_items] & (popularity > 0))
    expected = expected_all[np.lexsort((expected_all, -popularity[expected_all]))]
    for page in (1, 2, 3):
        ctx = RankContext(models=models, catalog=catalog, settings=settings, now=NOW + DAY, user_id=None,
                          context_item=None, context_item_given=False, category="c3")
        answer = rank(REGISTRY["category-popular"], ctx, compile_filters({"category": "c3"}), page=page, limit=25)
        assert answer.indices == expected[(page - 1) * 25:page * 25].tolist()
        assert set(answer.reasons) == {"category_popular"}
        assert answer.total_count == in_category.sum()  # its fallbacks list the category's other items


def test_remembered_masks_are_bounded_in_bytes_as_well_as_in_number():
    """A million-item catalog's masks are a MB each: a table of them keeps fewer, newest first."""
    memo: dict = {}
    mask = lambda: np.zeros(1_000_000, dtype=bool)  # noqa: E731
    for key in range(10):
        memoised_recent(memo, "masks", key, mask, kept=128, kept_bytes=3_500_000)
    assert list(memo["masks"]) == [7, 8, 9]
    small = lambda: np.zeros(1_000, dtype=bool)  # noqa: E731
    for key in range(200):
        memoised_recent(memo, "small", key, small, kept=128, kept_bytes=3_500_000)
    assert list(memo["small"]) == list(range(72, 200))
    huge = lambda: np.zeros(5_000_000, dtype=bool)  # noqa: E731
    assert memoised_recent(memo, "huge", "only", huge, kept=128, kept_bytes=3_500_000).size == 5_000_000
    assert list(memo["huge"]) == ["only"]  # the newest is kept even above the bound
