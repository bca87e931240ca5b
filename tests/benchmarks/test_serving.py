"""The eval's in-process production path (benchmarks/quality/serving.py) on a tiny world: answers
come from app.recommend.answer.answer over a model trained by workers.train_process.train_models,
so they carry what only that path produces (the request's filters, the category of the context
item, the response's ids), never a hand-built ranking context."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.ml.interactions import CatalogSnapshot
from app.schemas.recommend import RecommendIn
from benchmarks.quality.serving import NOW_GAP_S, UNSEEN, Served, default_settings, event_log, run_now, train

N_USERS, N_ITEMS, PER_USER = 60, 40, 8
START = 1_000_000_000.0  # 2001: the history is old, as an imported one would be


def category(item: int) -> str:
    return "shoes" if item % 2 == 0 else "hats"


@pytest.fixture(scope="module")
def served() -> Served:
    """Users who each browse one of four taste clusters; every item has a category."""
    rng = np.random.default_rng(0)
    users, items, stamps = [], [], []
    for u in range(N_USERS):
        cluster = np.arange(N_ITEMS)[np.arange(N_ITEMS) % 4 == u % 4]
        for n, item in enumerate(rng.choice(cluster, PER_USER, replace=False).tolist()):
            users.append(f"u{u}")
            items.append(f"i{item}")
            stamps.append(START + u * 3600 + n)
    settings = default_settings()
    log = event_log(settings, users=users, items=items, event_name="view", event_family="engagement",
                    timestamps=np.asarray(stamps, dtype=np.float64))
    snapshot = CatalogSnapshot.build([f"i{i}" for i in range(N_ITEMS)],
                                     attributes=[{"category": category(i)} for i in range(N_ITEMS)])
    return train(settings, log, snapshot)


def seen_by(served: Served, user: str) -> set[str]:
    models = served.models
    row = models.interacted[models.user_index[user]]
    return {models.item_ids[i] for i in row.indices.tolist()}


def test_the_answer_is_the_api_response_of_the_trained_model(served: Served) -> None:
    data = served.respond(RecommendIn(strategy="personalized", user_id="u1", filters=UNSEEN, limit=10))
    assert data["model_version"] == served.models.version and data["recommendation_id"]
    assert data["recommended_items"] == [r["item_id"] for r in data["results"]]
    assert served.now == pytest.approx(served.models.trained_at) and served.now > START + N_USERS * 3600
    assert served.now == pytest.approx(float(served.models.params.data_now) + NOW_GAP_S)


def test_exclude_interacted_reaches_the_ranking(served: Served) -> None:
    """The unseen-items protocol asks the API for it: the user's items are never in the page,
    and the page is still full (the filter is applied inside the ranking, not after it)."""
    for user in ("u1", "u2", "u7"):
        seen = seen_by(served, user)
        everything = served.respond(RecommendIn(strategy="personalized", user_id=user, limit=N_ITEMS))
        assert seen & set(everything["recommended_items"]), "without the filter the user's items rank"
        unseen = served.ask("personalized", user_id=user, filters=UNSEEN, limit=10)
        ids = {served.snapshot.catalog.item_ids[i] for i in unseen}
        assert len(unseen) == 10 and not ids & seen


def test_the_context_items_category_narrows_category_popular(served: Served) -> None:
    """answer() takes the category from the context item (a hand-built context had none, and
    category-popular then fell back to popular over every category)."""
    catalog = served.snapshot.catalog
    for context in ("i2", "i3"):
        page = served.ask("category-popular", context_item_id=context, limit=10)
        assert page and {category(int(catalog.item_ids[i][1:])) for i in page} == {category(int(context[1:]))}
    popular = {category(int(catalog.item_ids[i][1:])) for i in served.ask("popular", limit=10)}
    assert popular == {"shoes", "hats"}, "popular alone mixes the categories"


def test_a_coroutine_that_suspends_is_refused() -> None:
    with pytest.raises(RuntimeError, match="suspended"):
        run_now(asyncio.sleep(0))
