from dataclasses import replace

import numpy as np
import pytest

from app.ml.cooccurrence import (
    assign_sessions,
    basket_incidence,
    pair_scores,
    purchase_baskets,
    transitions,
)
from app.ml.interactions import CatalogSnapshot, decay, encode_log, factorize, item_universe, user_universe
from tests.ml.conftest import DAY, HOUR, NOW

GAP = 30 * 60.0


def encoded_of(log):
    return encode_log(log, item_universe(log, CatalogSnapshot.empty()), user_universe(log))


def row_of(table, item_ids, item):
    row = table[item_ids.tolist().index(item)]
    return dict(zip(item_ids[row.indices].tolist(), row.data.tolist()))


def test_a_pause_longer_than_the_gap_starts_a_new_session():
    users = np.array([0, 0, 0, 0, 1, 1])
    t0 = NOW - DAY
    times = np.array([t0, t0 + 29 * 60, t0 + 29 * 60 + 31 * 60, t0 + 61 * 60 + 29 * 60, t0, t0 + 60])
    sessions = assign_sessions(users, times, np.full(6, -1), GAP)
    assert sessions[0] == sessions[1] != sessions[2] == sessions[3]
    assert sessions[4] == sessions[5] and sessions[4] not in sessions[:4]


def test_session_ids_win_over_the_gap_rule_and_are_per_user():
    users = np.array([0, 0, 1, 0])
    times = np.array([NOW - 5 * HOUR, NOW, NOW, NOW - HOUR])
    ids, _ = factorize(["s1", "s1", "s1", None])
    sessions = assign_sessions(users, times, ids, GAP)
    assert sessions[0] == sessions[1], "same session_id hours apart is one session"
    assert sessions[2] != sessions[0], "another user's s1 is another session"
    assert sessions[3] not in (sessions[0], sessions[2])


def test_events_out_of_order_are_sessionised_by_time():
    sessions = assign_sessions(np.zeros(3, np.int64), np.array([NOW, NOW - 2 * HOUR, NOW - 60]),
                               np.full(3, -1), GAP)
    assert sessions[0] == sessions[2] != sessions[1]


def test_factorize_treats_none_and_empty_as_missing():
    codes, n = factorize(np.array(["x", None, "y", "", "x"], dtype=object))
    assert codes.tolist() == [0, -1, 1, -1, 0] and n == 2


def bought_together_world(events):
    """A and B are always bought together; bananas are in every order; R1 and R2 once."""
    order = 0
    for user in range(12):
        for items in (["A", "B", "bananas"], ["bananas", f"x{user}"], ["bananas", f"y{user}"]):
            order += 1
            for item in items:
                events.add(f"u{user}", item, "purchase", t=NOW - order * HOUR, order=f"o{order}")
    for item in ("R1", "R2"):
        events.add("rare", item, "purchase", t=NOW - 2 * DAY, order="o-rare")
    return encoded_of(events.log())


def tables(encoded, params, k=10):
    sessions = assign_sessions(encoded.users, encoded.log.timestamps, encoded.log.sessions,
                               params.session_gap_s)
    keys, items = purchase_baskets(encoded, sessions)
    incidence = basket_incidence(keys, items, encoded.n_items, params.max_basket_items)
    return pair_scores(incidence, k=k, shrinkage=params.pair_shrinkage, lift_weight=params.pair_lift_weight,
                       with_counts=True)


def test_items_always_bought_together_rank_first_for_each_other(events, params):
    encoded = bought_together_world(events)
    scored, _ = tables(encoded, params)
    for item, partner in (("A", "B"), ("B", "A")):
        found = row_of(scored, encoded.item_ids, item)
        assert max(found, key=found.get) == partner
        assert item not in found and all(0 < s < 1 for s in found.values())


def test_raw_counts_favour_the_ubiquitous_item_lift_does_not(events, params):
    encoded = bought_together_world(events)
    scored, counts = tables(encoded, params)
    raw = row_of(counts, encoded.item_ids, "A")
    assert raw == {"B": 12.0, "bananas": 12.0}, "raw counts cannot tell B from bananas"
    found = row_of(scored, encoded.item_ids, "A")
    assert found["B"] > found.get("bananas", 0.0)
    assert "A" not in row_of(scored, encoded.item_ids, "bananas") or \
        row_of(scored, encoded.item_ids, "bananas")["A"] < found["B"]


def test_one_co_purchase_of_two_rare_items_does_not_beat_a_strong_pair(events, params):
    encoded = bought_together_world(events)
    scored, _ = tables(encoded, params)
    assert row_of(scored, encoded.item_ids, "R1")["R2"] < row_of(scored, encoded.item_ids, "A")["B"] / 3


def test_purchases_without_order_id_group_by_session(events, params):
    events.add("u", "tent", "purchase", t=NOW - 3 * HOUR).add("u", "pegs", "purchase", t=NOW - 3 * HOUR + 600)
    events.add("u", "book", "purchase", t=NOW)
    encoded = encoded_of(events.log())
    _, counts = tables(encoded, params)
    assert row_of(counts, encoded.item_ids, "tent") == {"pegs": 1.0}
    assert row_of(counts, encoded.item_ids, "book") == {}


def test_the_same_order_id_of_two_users_is_two_baskets(events, params):
    events.add("u1", "a", "purchase", order="o1").add("u2", "b", "purchase", order="o1")
    encoded = encoded_of(events.log())
    _, counts = tables(encoded, params)
    assert counts.nnz == 0


def test_oversized_baskets_are_ignored(events, params):
    for i in range(params.max_basket_items + 1):
        events.add("bot", f"i{i}", "purchase", order="bulk")
    encoded = encoded_of(events.log())
    scored, counts = tables(encoded, params)
    assert scored.nnz == counts.nnz == 0


def test_co_engagement_pairs_items_viewed_in_the_same_sessions(events, params):
    for user in range(10):
        t = NOW - user * DAY
        events.add(f"u{user}", "show", "view", t=t).add(f"u{user}", "sequel", "click", t=t + 300)
        events.add(f"u{user}", f"noise{user}", "view", t=t + 600)
        events.add(f"u{user}", "dropped", "remove_from_cart", t=t + 900)
    for user in range(20):  # the rest of the shop: sessions without the show
        events.add(f"w{user}", f"other{user}", "view").add(f"w{user}", f"other{user + 1}", "view")
    encoded = encoded_of(events.log())
    sessions = assign_sessions(encoded.users, encoded.log.timestamps, encoded.log.sessions, GAP)
    engaged = encoded.log.weights > 0
    scored, counts = pair_scores(
        basket_incidence(sessions[engaged], encoded.items[engaged], encoded.n_items, 100), k=5, shrinkage=5.0,
        lift_weight=params.pair_lift_weight,
    )
    found = row_of(scored, encoded.item_ids, "show")
    assert max(found, key=found.get) == "sequel" and "dropped" not in found
    assert counts is None


def test_transitions_follow_the_next_distinct_item_within_a_session(events, params):
    for user in range(5):
        t = NOW - user * DAY
        for step, item in enumerate(["A", "A", "B", "C"]):
            events.add(f"u{user}", item, "view", t=t + step * 60)
    events.add("u0", "D", "view", t=NOW + 3 * HOUR)  # three hours later: a new session, no C -> D
    events.add("u1", "A", "view", t=NOW - 1 * DAY + 4 * 60).add("u1", "E", "view", t=NOW - 1 * DAY + 5 * 60)
    encoded = encoded_of(events.log())
    sessions = assign_sessions(encoded.users, encoded.log.timestamps, encoded.log.sessions, GAP)
    table = transitions(encoded, sessions, k=5)
    assert row_of(table, encoded.item_ids, "A") == pytest.approx({"B": 5 / 6, "E": 1 / 6})
    assert list(row_of(table, encoded.item_ids, "A")) == ["B", "E"], "best first"
    assert row_of(table, encoded.item_ids, "B") == pytest.approx({"C": 1.0})
    assert row_of(table, encoded.item_ids, "C") == pytest.approx({"A": 1.0}), "u1 came back to A"
    assert row_of(table, encoded.item_ids, "D") == {} and row_of(table, encoded.item_ids, "E") == {}
    assert table.diagonal().sum() == 0


def test_recent_baskets_outweigh_old_ones_but_raw_counts_ignore_age(events, params):
    """Lamp went with shade a year ago and with bulb this month, equally often."""
    for n in range(6):
        events.add(f"old{n}", "lamp", "purchase", t=NOW - 365 * DAY - n * HOUR, order=f"o{n}")
        events.add(f"old{n}", "shade", "purchase", t=NOW - 365 * DAY - n * HOUR, order=f"o{n}")
        events.add(f"new{n}", "lamp", "purchase", t=NOW - 10 * DAY - n * HOUR, order=f"n{n}")
        events.add(f"new{n}", "bulb", "purchase", t=NOW - 10 * DAY - n * HOUR, order=f"n{n}")
    for n in range(30):  # the rest of the shop
        events.add(f"w{n}", f"x{n}", "purchase", t=NOW - n * DAY, order=f"w{n}")
        events.add(f"w{n}", f"y{n}", "purchase", t=NOW - n * DAY, order=f"w{n}")
    encoded = encoded_of(events.log())
    sessions = assign_sessions(encoded.users, encoded.log.timestamps, encoded.log.sessions, GAP)
    keys, items = purchase_baskets(encoded, sessions)
    recency = decay(encoded.log.timestamps[encoded.log.is_purchase], NOW, params.pair_half_life_s)
    incidence = basket_incidence(keys, items, encoded.n_items, params.max_basket_items, weights=recency)
    scored, counts = pair_scores(incidence, k=5, shrinkage=params.pair_shrinkage,
                                 lift_weight=params.pair_lift_weight, with_counts=True)
    found = row_of(scored, encoded.item_ids, "lamp")
    assert found["bulb"] > found["shade"] > 0
    assert row_of(counts, encoded.item_ids, "lamp") == {"shade": 6.0, "bulb": 6.0}


def test_lift_weight_one_is_the_added_value_and_small_weights_follow_confidence(events, params):
    """A's 12 baskets hold B 10 times and C 6 times; B also sells in 40 other baskets, C never."""
    for n in range(12):
        for item in ["A"] + (["B"] if n < 10 else []) + (["C"] if n < 6 else []):
            events.add(f"u{n}", item, "purchase", order=f"o{n}")
    for n in range(40):
        events.add(f"v{n}", "B", "purchase", order=f"p{n}").add(f"v{n}", f"z{n}", "purchase", order=f"p{n}")
        events.add(f"w{n}", f"x{n}", "purchase", order=f"q{n}").add(f"w{n}", f"y{n}", "purchase", order=f"q{n}")
    encoded = encoded_of(events.log())
    added, _ = tables(encoded, replace(params, pair_lift_weight=1.0))
    mostly_confidence, _ = tables(encoded, replace(params, pair_lift_weight=0.1))
    total, s = 92.0, params.pair_shrinkage

    def expected(n_ab: float, n_b: float, w: float) -> float:
        lift = (n_ab + s) / (12.0 * n_b / total + s)
        return n_ab / (12.0 + s) * (1 - w / lift)

    a_added = row_of(added, encoded.item_ids, "A")
    assert a_added["B"] == pytest.approx(expected(10, 50, 1.0), rel=1e-5)
    assert a_added["C"] == pytest.approx(expected(6, 6, 1.0), rel=1e-5)
    assert a_added["C"] > a_added["B"], "added value: C is what A makes likely, B sells anyway"
    a_conf = row_of(mostly_confidence, encoded.item_ids, "A")
    assert a_conf["B"] == pytest.approx(expected(10, 50, 0.1), rel=1e-5)
    assert list(a_conf) == ["B", "C"], "a small weight ranks by P(b | a)"
