import numpy as np

from app.ml.interactions import CatalogSnapshot
from app.ml.popularity import exposure_penalty, popularity_scores, trending_scores
from tests.ml.conftest import DAY, NOW, encoded_of


def stream(events, item, per_day, start_day, end_day):
    """per_day views a day, evenly spread, from start_day to end_day days ago."""
    times = np.arange(NOW - start_day * DAY, NOW - end_day * DAY, DAY / per_day)
    for n, t in enumerate(times):
        events.add(f"{item}-fan{n % 50}", item, "view", t=float(t))


def scores_by_item(encoded, vector):
    return dict(zip(encoded.item_ids.tolist(), vector.tolist()))


def test_trending_prefers_a_rising_item_over_a_steadily_popular_one(events, params):
    stream(events, "steady", 20, 60, 0)
    stream(events, "rising", 2, 60, 2)
    stream(events, "rising", 20, 2, 0)
    stream(events, "fading", 20, 60, 3)
    encoded = encoded_of(events.log())
    trending = scores_by_item(encoded, trending_scores(encoded, params))
    popular = scores_by_item(encoded, popularity_scores(encoded, params))
    assert trending["rising"] == 1.0
    assert trending["steady"] < 0.3 * trending["rising"]
    assert trending["fading"] == 0.0
    assert popular["steady"] > popular["rising"]


def test_one_fresh_view_of_an_unknown_item_is_not_a_surge(events, params):
    stream(events, "rising", 2, 30, 1)
    stream(events, "rising", 10, 1, 0)
    events.add("someone", "brand-new", "view", t=NOW - 60)
    encoded = encoded_of(events.log())
    trending = scores_by_item(encoded, trending_scores(encoded, params))
    assert trending["brand-new"] < 0.5 * trending["rising"]


def test_popularity_is_log_scaled_to_unit_max_and_ignores_negative_weights(events, params):
    events.add("u", "hit", "purchase", t=NOW).add("u", "hit", "purchase", t=NOW)
    events.add("u", "meh", "view", t=NOW).add("u", "meh", "remove_from_cart", t=NOW)
    events.add("u", "removed", "remove_from_cart", t=NOW)
    encoded = encoded_of(events.log(), CatalogSnapshot.build(["untouched"]))
    popular = popularity_scores(encoded, params)
    assert popular.dtype == np.float32
    by_item = scores_by_item(encoded, popular)
    assert by_item["hit"] == 1.0
    assert by_item["meh"] == np.float32(np.log1p(1.0) / np.log1p(20.0))
    assert by_item["removed"] == by_item["untouched"] == 0.0


def test_without_events_everything_is_zero(events, params):
    encoded = encoded_of(events.log(), CatalogSnapshot.build(["a", "b"]))
    assert not popularity_scores(encoded, params).any() and not trending_scores(encoded, params).any()


def test_items_shown_often_but_ignored_are_demoted(events, params):
    for n in range(200):
        events.add(f"s{n}", "ignored", "impression").add(f"s{n}", "liked", "impression")
        if n % 5 == 0:
            events.add(f"s{n}", "liked", "click")
    for n in range(3):
        events.add(f"s{n}", "few-shows", "impression")
    events.add("u", "never-shown", "view")
    penalty = scores_by_item(encoded_of(events.log()), exposure_penalty(encoded_of(events.log()), params))
    assert penalty["never-shown"] == 1.0 and penalty["liked"] == 1.0
    assert penalty["ignored"] < 0.4  # 200 impressions, ~20 engagements expected (one per ten shown), none came
    assert penalty["few-shows"] > 0.9  # three impressions prove nothing


def test_without_impressions_nothing_is_demoted(events, params):
    events.add("u", "a", "view").add("v", "b", "purchase")
    assert exposure_penalty(encoded_of(events.log()), params).tolist() == [1.0, 1.0]
