import math

import numpy as np
import pytest

from app.ml.interactions import CatalogSnapshot
from app.ml.repeat import (
    MIN_LOG_PRICE_SPREAD,
    UNKNOWN_CYCLE_SCORE,
    due_scores,
    item_prices,
    parse_price,
    purchase_history,
    user_price_band,
)
from tests.ml.conftest import DAY, NOW, encoded_of


def at(matrix, encoded, user, item):
    return matrix[encoded.user_ids.tolist().index(user), encoded.item_ids.tolist().index(item)]


def weekly_world(events):
    """coffee: bought every 7 days, last 8 days ago. milk: same cycle, last bought yesterday."""
    for week in range(5):
        events.add("u", "coffee", "purchase", t=NOW - 8 * DAY - week * 7 * DAY)
        events.add("u", "milk", "purchase", t=NOW - 1 * DAY - week * 7 * DAY)
    events.add("u", "milk", "purchase", t=NOW - 1 * DAY + 120)  # a second unit, same occasion
    return encoded_of(events.log())


def test_an_item_past_its_cycle_is_due_and_one_bought_yesterday_is_not(events):
    encoded = weekly_world(events)
    history = purchase_history(encoded, same_occasion_s=1800)
    coffee, milk = (encoded.item_ids.tolist().index(i) for i in ("coffee", "milk"))
    assert history.repurchase_interval[[coffee, milk]] == pytest.approx([7 * DAY, 7 * DAY])
    last = np.array([at(history.last_purchase_ts, encoded, "u", i) for i in ("coffee", "milk")])
    counts = np.array([at(history.counts, encoded, "u", i) for i in ("coffee", "milk")])
    scores = due_scores(last, counts, history.repurchase_interval[[coffee, milk]], NOW)
    assert scores[0] > 0.7
    assert scores[1] < 0.05


def test_purchases_close_together_are_one_occasion(events):
    encoded = weekly_world(events)
    history = purchase_history(encoded, same_occasion_s=1800)
    assert at(history.counts, encoded, "u", "milk") == 5.0
    assert at(history.last_purchase_ts, encoded, "u", "milk") == NOW - 1 * DAY
    assert history.last_purchase_ts.dtype == np.float64


def test_repurchase_interval_is_the_median_gap_and_nan_when_never_repeated(events):
    for user, gaps in (("a", [6, 7]), ("b", [8, 30])):
        t = NOW - 60 * DAY
        events.add(user, "soap", "purchase", t=t)
        for gap in gaps:
            t += gap * DAY
            events.add(user, "soap", "purchase", t=t)
    events.add("a", "sofa", "purchase", t=NOW)
    encoded = encoded_of(events.log(), CatalogSnapshot.build(["never-bought"]))
    interval = dict(zip(encoded.item_ids.tolist(), purchase_history(encoded, 1800).repurchase_interval))
    assert interval["soap"] == pytest.approx(7.5 * DAY)
    assert math.isnan(interval["sofa"]) and math.isnan(interval["never-bought"])


def test_due_score_is_highest_at_one_cycle_and_unknown_cycles_score_low():
    cycle = np.full(5, 10 * DAY)
    last = NOW - np.array([1, 5, 10, 20, 60]) * DAY
    scores = due_scores(last, np.full(5, 3.0), cycle, NOW)
    assert np.argmax(scores) == 2 and scores[2] == pytest.approx(0.75)
    assert scores[0] < scores[1] < scores[2] and scores[2] > scores[3] > scores[4]
    unknown = due_scores(np.array([NOW - DAY]), np.array([1.0]), np.array([np.nan]), NOW)
    assert unknown[0] == pytest.approx(UNKNOWN_CYCLE_SCORE / 2)


def test_price_band_centres_on_what_the_user_pays(events):
    catalog = CatalogSnapshot.build(["cheap", "mid", "dear", "unpriced"],
                                    attributes=[{"price": 10}, {"price": "20"}, {"price": 40}, {}])
    for item in ("cheap", "mid", "dear"):
        events.add("spender", item, "view")
    events.add("spender", "mid", "remove_from_cart")  # negative events say nothing about price
    events.add("one-off", "unpriced", "purchase", price=15.0)
    events.add("browser", "unpriced", "view")
    encoded = encoded_of(events.log(), catalog)
    prices = item_prices(catalog, encoded.item_ids, encoded)
    assert dict(zip(encoded.item_ids.tolist(), prices.tolist())) == pytest.approx(
        {"cheap": 10.0, "mid": 20.0, "dear": 40.0, "unpriced": 15.0})
    center, spread = user_price_band(encoded, prices)
    by_user = {u: (c, s) for u, c, s in zip(encoded.user_ids.tolist(), center, spread)}
    assert by_user["spender"][0] == pytest.approx(math.log(20.0), rel=1e-5)
    assert by_user["spender"][1] == pytest.approx(math.sqrt(2 / 3) * math.log(2.0), rel=1e-5)
    assert by_user["one-off"] == pytest.approx((math.log(15.0), MIN_LOG_PRICE_SPREAD), rel=1e-5)
    assert by_user["browser"] == pytest.approx((math.log(15.0), MIN_LOG_PRICE_SPREAD), rel=1e-5)


def test_users_without_any_price_have_no_band(events):
    events.add("u", "x", "view")
    encoded = encoded_of(events.log())
    center, spread = user_price_band(encoded, item_prices(CatalogSnapshot.empty(), encoded.item_ids, encoded))
    assert np.isnan(center[0]) and np.isnan(spread[0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12.0), ("9.5", 9.5), (True, math.nan), ("free", math.nan), (-3, math.nan), (None, math.nan),
     (float("inf"), math.nan)],
)
def test_parse_price(value, expected):
    got = parse_price(value)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
