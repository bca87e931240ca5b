"""The per-organisation model search (app/ml/selection.py) and the data-relative age origin,
through train_models: the function the worker's training child runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.ml import selection
from app.ml.interactions import CatalogSnapshot, InteractionLog, data_now
from app.ml.params import TrainParams
from app.ml.personalization import ALS, EASE, KNN, POPULAR, Candidate
from app.ml.train import SearchPlan, train_org_models
from app.recommend.catalog import Catalog
from app.recommend.filters import compile_filters
from app.recommend.ranking import RankContext
from app.recommend.registry import REGISTRY
from app.recommend.service import rank
from app.settings import Settings
from tests.ml.conftest import DAY, NOW
from workers.train_process import train_models

YEAR = 365 * DAY


def clustered_world(
    *, n_users: int = 300, n_items: int = 120, clusters: int = 6, per_user: int = 12, seed: int = 0,
    end: float = NOW, structure: float = 0.9,
) -> tuple[InteractionLog, CatalogSnapshot]:
    """Users who each browse one taste cluster (share `structure`; the rest at random), over the
    90 days before `end`: a world where a personal model clearly beats popularity."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % clusters
    users, items, times = [], [], []
    for u in range(n_users):
        mine = np.flatnonzero(item_cluster == u % clusters)
        picks = np.where(rng.random(per_user) < structure, rng.choice(mine, per_user),
                         rng.integers(0, n_items, per_user))
        users += [f"u{u}"] * per_user
        items += [f"i{i}" for i in picks.tolist()]
        times += sorted((end - rng.random(per_user) * 90 * DAY).tolist())
    log = InteractionLog.build(user_ids=users, item_ids=items, event_names=["view"] * len(users),
                               weights=[1.0] * len(users), timestamps=times)
    return log, CatalogSnapshot.build([f"i{i}" for i in range(n_items)])


def shapeless_world(*, n_users: int = 300, n_items: int = 150, per_user: int = 10, seed: int = 1):
    """Every user draws from the same skewed popularity, and each one's latest pick is one of the
    three best sellers: nothing personal to learn, and popularity predicts the next item."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    weights /= weights.sum()
    users, items, times = [], [], []
    for u in range(n_users):
        picks = rng.choice(n_items, per_user, p=weights)
        picks[-1] = rng.integers(0, 3)  # times are sorted: this is the latest
        users += [f"u{u}"] * per_user
        items += [f"i{i}" for i in picks.tolist()]
        times += sorted((NOW - rng.random(per_user) * 90 * DAY).tolist())
    log = InteractionLog.build(user_ids=users, item_ids=items, event_names=["view"] * len(users),
                               weights=[1.0] * len(users), timestamps=times)
    return log, CatalogSnapshot.build([f"i{i}" for i in range(n_items)])


def shifted(log: InteractionLog, seconds: float) -> InteractionLog:
    return dataclasses.replace(log, timestamps=log.timestamps + seconds)


def settings(**overrides) -> Settings:
    return Settings.model_construct(**overrides)


def top10(models, catalog_snapshot: CatalogSnapshot, strategy: str, user_id: str, now: float) -> list[str]:
    """Page 1 of a strategy as the api ranks it (service.rank over the served catalog)."""
    rows = [(i, t, s, "{}", 0.0, 0.0) for i, t, s in zip(catalog_snapshot.item_ids.tolist(),
                                                       catalog_snapshot.item_types.tolist(),
                                                       catalog_snapshot.statuses.tolist())]
    catalog = Catalog.build(rows, order=models.item_ids)
    ctx = RankContext(models=models, catalog=catalog, settings=settings(), now=now, user_id=user_id,
                      context_item=None, context_item_given=False, category=None)
    page = rank(REGISTRY[strategy], ctx, compile_filters(None), page=1, limit=10)
    return [str(catalog.item_ids[i]) for i in page.indices]


# --- the age origin ----------------------------------------------------------------------------


def test_the_age_origin_is_the_newest_event_never_a_future_one():
    assert data_now(np.array([10.0, 50.0, 30.0]), 100.0) == 50.0
    assert data_now(np.array([10.0, 500.0]), 100.0) == 100.0  # a client clock in the future
    assert data_now(np.array([]), 100.0) == 100.0


@pytest.mark.parametrize("strategy", ["personalized", "popular", "similar", "frequently-bought-together"])
def test_a_history_stamped_years_ago_trains_to_the_same_rankings_as_today(strategy):
    log, catalog = clustered_world()
    now = NOW + 3 * DAY
    old = shifted(log, -6 * YEAR)  # the same shop, imported six years later
    served = settings(model_search=False)
    fresh, _ = train_models(log, catalog, served, now=now, version="fresh")
    aged, _ = train_models(old, catalog, served, now=now, version="aged")
    users = [f"u{u}" for u in range(0, 300, 23)]
    compared = 0
    for user in users:
        if strategy in ("similar", "frequently-bought-together"):
            continue
        assert top10(fresh, catalog, strategy, user, now) == top10(aged, catalog, strategy, user, now)
        compared += 1
    np.testing.assert_allclose(aged.user_items.toarray(), fresh.user_items.toarray(), rtol=1e-5)
    np.testing.assert_allclose(aged.popularity, fresh.popularity, rtol=1e-5)
    np.testing.assert_allclose(aged.item_neighbors.toarray(), fresh.item_neighbors.toarray(), rtol=1e-5)
    assert compared or strategy in ("similar", "frequently-bought-together")
    # Before: every weight decayed against the clock, 6 years = 73 half-lives: nothing was left.
    assert aged.user_items.nnz == fresh.user_items.nnz > 0


def test_trending_is_about_now_and_falls_back_to_popular_on_an_old_history():
    log, catalog = clustered_world()
    now = NOW
    aged, _ = train_models(shifted(log, -2 * YEAR), catalog, settings(model_search=False), now=now,
                           version="aged")
    assert not aged.trending.any()  # nothing is rising now
    assert top10(aged, catalog, "trending", "u1", now)  # ... and the answer is popular's, not empty
    assert top10(aged, catalog, "trending", "u1", now) == top10(aged, catalog, "popular", "u1", now)


# --- the search ----------------------------------------------------------------------------------


def test_the_search_picks_a_personal_model_that_beats_popular_by_far():
    log, catalog = clustered_world()
    models, timings = train_models(log, catalog, settings(), now=NOW, version="v1")
    quality = models.extra["quality"]
    assert quality["searched"] and quality["holdout_users"] == 300
    assert quality["chosen"]["model"] in (ALS, EASE, KNN)
    assert quality["personalized_vs_popular"] > 1.5
    scores = {(c["model"], tuple(sorted(c["params"].items()))): c["ndcg_at_10"] for c in quality["candidates"]}
    # The best on the holdout, or the first search's incumbent when nothing beat it clearly.
    chosen = selection.previous_choice(quality)
    assert (quality["chosen"]["ndcg_at_10"] == max(scores.values())
            or chosen == selection.first_incumbent(models.n_items, models.params))
    assert {c["model"] for c in quality["candidates"]} == {POPULAR, ALS, EASE, KNN}
    assert models.personalization == quality["chosen"]["model"] and "search" in timings
    # The winner's hyperparameters are what it was refitted with (and what serving reads).
    for name, value in quality["chosen"]["params"].items():
        assert getattr(models.params, name) == pytest.approx(value)


def test_where_nothing_beats_popular_personalized_serves_popular_and_says_so():
    log, catalog = shapeless_world()
    models, _ = train_models(log, catalog, settings(), now=NOW, version="v1")
    quality = models.extra["quality"]
    best_personal = max(c["ndcg_at_10"] for c in quality["candidates"] if c["model"] != POPULAR)
    assert best_personal <= quality["popular_ndcg_at_10"]  # ties go to popular, the floor
    assert quality["chosen"]["model"] == POPULAR and "popular" in quality["note"]
    assert models.personalization == POPULAR
    assert top10(models, catalog, "personalized", "u3", NOW)[:5] == [
        i for i in top10(models, catalog, "popular", "u3", NOW) if i not in _bought(log, "u3")
    ][:5]


def _bought(log: InteractionLog, user: str) -> set[str]:
    return set(log.item_ids[(log.user_ids == user) & log.is_purchase].tolist())


def test_a_world_too_small_to_compare_keeps_the_default_family_and_says_why():
    log, catalog = clustered_world(n_users=8)
    models, _ = train_models(log, catalog, settings(), now=NOW, version="v1")
    quality = models.extra["quality"]
    assert quality["holdout_users"] == 8 and quality["candidates"] == []
    assert "too little data" in quality["note"] and quality["personalized_vs_popular"] is None
    assert models.personalization == EASE  # the default on a small catalog


def test_later_trains_refit_the_winner_until_the_data_grows_or_a_search_is_asked_for():
    log, catalog = clustered_world()
    s = settings(model_search_growth=0.5)
    first, _ = train_models(log, catalog, s, now=NOW, version="v1")
    recorded = first.extra["quality"]
    again, timings = train_models(log, catalog, s, now=NOW, version="v2", previous_quality=recorded)
    assert "search" not in timings and again.extra["quality"]["searched"] is False
    assert again.extra["quality"]["searched_version"] == "v1"
    assert Candidate.of(again.params) == Candidate.of(first.params)
    asked, timings = train_models(log, catalog, s, now=NOW, version="v3", previous_quality=recorded, search=True)
    assert "search" in timings and asked.extra["quality"]["search_reason"] == "requested"
    bigger, _ = clustered_world(n_users=460, seed=3)
    grown, timings = train_models(bigger, catalog, s, now=NOW, version="v4", previous_quality=recorded)
    assert "search" in timings and "grew" in grown.extra["quality"]["search_reason"]


def test_the_previous_winner_is_refitted_even_when_it_is_not_the_default():
    log, catalog = clustered_world()
    recorded = {"candidates": [{"model": KNN}], "interactions": len(log), "searched_version": "v0",
                "chosen": {"model": KNN, "params": {"knn_neighbours": 50}}}
    models, _ = train_models(log, catalog, settings(), now=NOW, version="v1", previous_quality=recorded)
    assert models.personalization == KNN and models.user_factors.shape[1] == 0
    assert top10(models, catalog, "personalized", "u2", NOW)


def test_a_search_stops_starting_candidates_when_its_time_budget_is_spent():
    log, catalog = clustered_world()
    params = TrainParams(now=NOW, data_now=NOW)
    models, _ = train_org_models(log, catalog, params, version="v", search=SearchPlan(max_users=300, budget_s=1e-9))
    quality = models.extra["quality"]
    assert len(quality["candidates"]) == 2 and quality["complete"] is False
    assert quality["candidates"][0]["model"] == POPULAR


def test_the_holdout_is_each_users_latest_item_and_leaves_it_out_of_training():
    log, catalog = clustered_world(n_users=40)
    params = TrainParams(now=NOW, data_now=NOW)
    models, _ = train_org_models(log, catalog, dataclasses.replace(params, personal_model=ALS), version="v")
    from app.ml.interactions import encode_log, item_universe, user_universe

    encoded = encode_log(log, item_universe(log, catalog), user_universe(log))
    split = selection.holdout(encoded, models.user_items, params, allowed=np.ones(models.n_items, bool),
                              max_users=1000)
    for row, target in zip(split.rows.tolist(), split.targets.tolist()):
        user = models.user_ids[row]
        mine = log.user_ids == user
        latest = log.item_ids[mine][np.argmax(log.timestamps[mine])]
        assert models.item_ids[target] == latest
        assert split.train[row, target] == 0 and models.user_items[row, target] > 0
    assert split.train.nnz == models.user_items.nnz - split.rows.size


def test_the_holdout_does_not_depend_on_the_order_rows_were_read_in():
    """Events tied in time (a basket, a bulk import) hold out the same item whatever the order
    Postgres returns them in: two servers with the same data search the same holdout."""
    log, catalog = clustered_world(n_users=60)
    tied = dataclasses.replace(log, timestamps=np.floor(log.timestamps / (30 * DAY)) * (30 * DAY))
    order = np.random.default_rng(7).permutation(len(tied.timestamps))
    shuffled = InteractionLog.build(
        user_ids=tied.user_ids[order].tolist(), item_ids=tied.item_ids[order].tolist(),
        event_names=tied.event_names[order].tolist(), weights=tied.weights[order].tolist(),
        timestamps=tied.timestamps[order].tolist(),
    )
    from app.ml.interactions import decayed_matrix, encode_log, item_universe, user_universe

    params = TrainParams(now=NOW, data_now=NOW)
    held = []
    for one in (tied, shuffled):
        encoded = encode_log(one, item_universe(one, catalog), user_universe(one))
        split = selection.holdout(encoded, decayed_matrix(encoded, params), params,
                                  allowed=np.ones(len(item_universe(one, catalog)), bool), max_users=1000)
        held.append({(encoded.user_ids[r], encoded.item_ids[t]) for r, t in zip(split.rows, split.targets)})
    assert held[0] and held[0] == held[1]


def _trial(candidate: Candidate, gains: list[float]) -> selection.Trial:
    values = np.asarray(gains)
    return selection.Trial(candidate, float(values.mean()), 0.0, 0.0, values)


def test_a_challenger_must_beat_the_incumbent_beyond_noise():
    incumbent, challenger = Candidate(EASE, {"ease_lambda": 400.0}), Candidate(ALS)
    rng = np.random.default_rng(3)
    base = rng.random(400)
    popular = _trial(Candidate(POPULAR), (base * 0.5).tolist())
    held = _trial(incumbent, base.tolist())
    # Slightly better on average, but up and down from user to user: noise.
    noisy = _trial(challenger, (base + rng.normal(0.005, 0.2, base.size)).tolist())
    assert noisy.ndcg > held.ndcg
    assert selection._winner([popular, held, noisy], incumbent) == incumbent
    # Better for almost every user: a real improvement.
    clear = _trial(challenger, (base + 0.05 + rng.normal(0, 0.01, base.size)).tolist())
    assert selection._winner([popular, held, clear], incumbent) == challenger
    # An incumbent that loses to popular never stands on the margin.
    weak = _trial(incumbent, (base * 0.4).tolist())
    close = _trial(challenger, (base * 0.4 + rng.normal(0.12, 0.5, base.size)).tolist())
    assert selection._winner([popular, weak, close], incumbent) == max(
        [popular, close], key=lambda t: t.ndcg).candidate


def test_a_recorded_choice_comes_back_with_integer_hyperparameters_as_integers():
    recorded = {"chosen": {"model": ALS, "params": {"factors": 64.0, "iterations": 15.0, "alpha": 20, "regularization": 1}}}
    chosen = selection.previous_choice(recorded)
    assert chosen is not None and chosen.as_dict()["params"] == {
        "factors": 64, "iterations": 15, "alpha": 20.0, "regularization": 1.0, "als_presence": False}
    assert all(type(v) is int for k, v in chosen.params.items() if k in {"factors", "iterations"})


def test_a_candidate_expected_to_overrun_the_budget_does_not_start():
    """Not only checked before a fit: one expected to end past the budget (as slow as the
    slowest so far) is not begun; popular and the incumbent always run."""
    done = [_trial(Candidate(POPULAR), [0.1]), dataclasses.replace(_trial(Candidate(ALS), [0.2]), seconds=40.0)]
    assert selection.may_start(1, 500.0, done[:1], budget_s=1.0)
    assert selection.may_start(2, 50.0, done, budget_s=100.0)
    assert not selection.may_start(2, 70.0, done, budget_s=100.0)  # 70 + 40 > 100, though 70 < 100


def test_items_an_ease_model_does_not_reach_are_padding_not_behavioral_matches():
    """Catalog items nobody interacted with score exactly 0 under EASE: they fill the page after
    the scored items with the fallback's reason, never labelled as a behavioural match."""
    log, catalog = clustered_world(n_items=120)
    never_touched = [f"new{i}" for i in range(30)]
    catalog = CatalogSnapshot.build([*catalog.item_ids.tolist(), *never_touched])
    models, _ = train_models(log, catalog, settings(model_search=False), now=NOW, version="v1")
    assert models.personalization == EASE
    rows = [(i, t, s, "{}", 0.0, 0.0) for i, t, s in zip(catalog.item_ids.tolist(), catalog.item_types.tolist(),
                                                       catalog.statuses.tolist())]
    served = Catalog.build(rows, order=models.item_ids)
    ctx = RankContext(models=models, catalog=served, settings=settings(), now=NOW, user_id="u0",
                      context_item=None, context_item_given=False, category=None)
    page = rank(REGISTRY["personalized"], ctx, compile_filters(None), page=1, limit=len(served))
    reasons = {str(served.item_ids[i]): reason for i, reason in zip(page.indices, page.reasons)}
    assert {reasons[item] for item in never_touched if item in reasons} - {"behavioral_match"}
    assert all(reasons[item] != "behavioral_match" for item in never_touched if item in reasons)
    assert any(reason == "behavioral_match" for reason in reasons.values())


# --- presence-confidence ALS ---------------------------------------------------------------------


def test_the_search_tries_presence_als_and_keeps_it_on_a_small_catalog_unless_beaten():
    params = TrainParams(now=NOW)
    small = selection.candidates(150, params)
    presence = Candidate(ALS, dict(selection.PRESENCE_ALS))
    assert small[:2] == [Candidate(POPULAR), presence] == [Candidate(POPULAR), selection.first_incumbent(150, params)]
    assert Candidate(EASE, {"ease_lambda": 400.0}) in small and Candidate(ALS, dict(selection.TEXTBOOK_ALS)) in small
    assert Candidate(ALS, dict(selection.RETAIL_ALS)) not in small  # the search's cost on MovieLens
    big = selection.candidates(params.ease_max_items + 1, params)
    assert big[1] == Candidate.of(dataclasses.replace(params, personal_model=ALS))  # the configured ALS
    assert presence in big and Candidate(ALS, dict(selection.RETAIL_ALS)) in big
    assert not any(c.model == EASE for c in big)


def test_a_winner_recorded_before_presence_als_existed_reads_as_linear_confidence():
    recorded = {"chosen": {"model": ALS, "params": {"factors": 64.0, "regularization": 20.0, "alpha": 0.5,
                                                    "iterations": 15.0}}}
    choice = selection.previous_choice(recorded)
    assert choice == Candidate(ALS, dict(selection.RETAIL_ALS))
    # ... so it is not tried twice next to the same grid point.
    tried = selection.candidates(5000, TrainParams(now=NOW), previous=choice)
    assert tried.count(choice) == 1


def test_presence_als_serves_fresh_events_with_the_confidence_it_was_trained_with():
    from app.ml.als import fold_in_user, user_confidences
    from app.recommend.realtime import Activity
    from app.recommend.strategies import personalized

    log, catalog = clustered_world()
    models, _ = train_models(log, catalog, settings(), now=NOW, version="v1")
    assert models.personalization == ALS and models.params.als_presence  # the incumbent stood
    rows = [(i, t, s, "{}", 0.0, 0.0) for i, t, s in zip(catalog.item_ids.tolist(), catalog.item_types.tolist(),
                                                       catalog.statuses.tolist())]
    served = Catalog.build(rows, order=models.item_ids)
    recent = tuple(Activity(f"i{i}", "view", "engagement", NOW + 60 * (k + 1), None, None, None)
                   for k, i in enumerate((3, 7, 11)))  # newer than the model: folded in
    ctx = RankContext(models=models, catalog=served, settings=settings(), now=NOW, user_id="newcomer",
                      context_item=None, context_item_given=False, category=None, recent=recent)
    got = personalized.user_vector(ctx)
    items, weights = personalized._user_history(ctx, ctx.fresh_activity())

    def folded(presence: bool) -> np.ndarray:
        positive, confidences = user_confidences(items, weights, models.params.alpha, presence=presence)
        return fold_in_user(models.item_factors, models.item_factor_gram, positive, confidences,
                            models.params.regularization)

    assert got is not None
    np.testing.assert_allclose(got, folded(True), rtol=1e-5)
    assert not np.allclose(got, folded(False), rtol=1e-3)
