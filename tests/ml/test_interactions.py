import numpy as np
import pytest

from app.ml.interactions import (
    CatalogSnapshot,
    InteractionLog,
    build_matrix,
    decay,
    encode_log,
    index_of,
    item_universe,
    user_universe,
)
from app.ml.params import TrainParams
from tests.ml.conftest import DAY, NOW


def matrix_for(log, catalog, params):
    items, users = item_universe(log, catalog), user_universe(log)
    return build_matrix(log, index_of(items), index_of(users), params), items, users


def test_decay_halves_a_weight_after_one_half_life(events, params):
    events.add("u", "fresh", "purchase", t=NOW).add("u", "old", "purchase", t=NOW - 30 * DAY)
    matrix, items, _ = matrix_for(events.log(), CatalogSnapshot.empty(), params)
    row = dict(zip(items[matrix[0].indices], matrix[0].data))
    assert row["fresh"] == pytest.approx(10.0)
    assert row["old"] == pytest.approx(5.0)


def test_future_events_count_as_fresh_not_boosted():
    assert decay(np.array([NOW + DAY]), NOW, 30 * DAY)[0] == 1.0


def test_remove_from_cart_subtracts_and_is_clipped_at_zero(events, params):
    t = NOW - 60
    events.add("u", "kept", "add_to_cart", t=t).add("u", "kept", "remove_from_cart", t=t)
    events.add("u", "gone", "view", t=t).add("u", "gone", "remove_from_cart", t=t)
    events.add("u", "cancelled", "add_to_cart", t=t).add("u", "cancelled", "remove_from_cart", t=t)
    events.add("u", "cancelled", "remove_from_cart", t=t)
    matrix, items, _ = matrix_for(events.log(), CatalogSnapshot.empty(), params)
    assert matrix.dtype == np.float32
    assert (matrix.data > 0).all(), "no explicit zeros or negatives are stored"
    row = dict(zip(items[matrix[0].indices], matrix[0].data))
    assert row == pytest.approx({"kept": 2.0}, rel=1e-3)


def test_item_universe_is_the_sorted_union_of_catalog_and_log(events):
    events.add("u2", "z-only-in-log").add("u1", "b")
    catalog = CatalogSnapshot.build(["c", "b", "a"])
    assert item_universe(events.log(), catalog).tolist() == ["a", "b", "c", "z-only-in-log"]
    assert user_universe(events.log()).tolist() == ["u1", "u2"]


def test_events_outside_the_universes_are_dropped(events, params):
    events.add("u", "a").add("ghost", "a")
    encoded = encode_log(events.log(), np.array(["a"], dtype=object), np.array(["u"], dtype=object))
    assert len(encoded.log) == 1 and encoded.users.tolist() == [0]


def test_log_columns_must_have_one_length():
    with pytest.raises(ValueError, match="differ in length"):
        InteractionLog(
            users=np.zeros(1, np.int32), items=np.zeros(0, np.int32), names=np.zeros(0, np.int16),
            weights=np.zeros(0, np.float32), is_purchase=np.zeros(0, bool), timestamps=np.zeros(0),
            orders=np.zeros(0, np.int32), sessions=np.zeros(0, np.int32), prices=np.zeros(0, np.float32),
            is_exposure=np.zeros(0, bool), user_vocab=np.array(["u"], dtype=object),
            item_vocab=np.empty(0, dtype=object), name_vocab=np.empty(0, dtype=object),
        )


def test_build_defaults_mark_purchases_and_missing_context(events):
    log = events.add("u", "a", "purchase").add("u", "b", "view").log()
    assert log.is_purchase.tolist() == [True, False]
    assert log.orders.tolist() == [-1, -1] and log.sessions.tolist() == [-1, -1]
    assert np.isnan(log.prices).all()


@pytest.mark.parametrize("field", ["decay_half_life_days", "trending_prior_events", "ease_lambda"])
def test_params_reject_non_positive_scales(field):
    with pytest.raises(ValueError, match=field):
        TrainParams(now=NOW, **{field: 0})
