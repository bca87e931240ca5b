"""The parts that work a slice of a big log at a time (or without sorting it) give exactly what
the whole-log computation they replaced gives."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml import cooccurrence, selection
from app.ml.cooccurrence import assign_sessions, basket_incidence, transitions
from app.ml.history import interacted_items
from app.ml.interactions import CatalogSnapshot, InteractionLog, encode_log, item_universe, user_universe
from tests.ml.conftest import NOW


def random_log(seed: int, n: int = 3_000, users: int = 60, items: int = 40) -> InteractionLog:
    rng = np.random.default_rng(seed)
    names = rng.choice(["view", "click", "add_to_cart", "remove_from_cart", "purchase", "impression"], n)
    weights = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "remove_from_cart": -2.0, "purchase": 10.0,
               "impression": 0.0}
    sessions = [None if rng.random() < 0.3 else f"s{rng.integers(0, 200)}" for _ in range(n)]
    return InteractionLog.build(
        user_ids=[f"u{u}" for u in rng.integers(0, users, n)],
        item_ids=[f"i{i}" for i in rng.integers(0, items, n)],
        event_names=names.tolist(),
        weights=[weights[name] for name in names.tolist()],
        timestamps=(NOW - rng.integers(0, 50, n) * 600.0).tolist(),  # many ties in time
        session_ids=sessions,
        is_exposure=(names == "impression").tolist(),
    )


def encoded(seed: int):
    log = random_log(seed)
    return encode_log(log, item_universe(log, CatalogSnapshot.empty()), user_universe(log))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_latest_event_per_user_is_the_sorted_logs_last(seed: int) -> None:
    enc = encoded(seed)
    log = enc.log
    events = (log.weights > 0) & ~log.is_exposure
    positive = np.flatnonzero(events)
    users = enc.users[positive]
    items = enc.items[positive]
    # The sort it replaced; of items tied in time, the highest index (not the last row read).
    order = np.lexsort((items, log.timestamps[positive], users))
    last = order[np.r_[users[order][1:] != users[order][:-1], True]]
    rows, targets = selection._latest_per_user(enc, events)
    assert rows.tolist() == users[last].tolist()
    assert targets.tolist() == items[last].tolist()


@pytest.mark.parametrize("seed", [1, 2])
def test_transitions_ordered_a_range_of_sessions_at_a_time_equal_the_whole_log(seed: int,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    enc = encoded(seed)
    sessions = assign_sessions(enc.users, enc.log.timestamps, enc.log.sessions, 1800.0)
    whole = transitions(enc, sessions, k=10)
    monkeypatch.setattr(cooccurrence, "_SESSION_EVENTS", 97)  # many small ranges
    parts = transitions(enc, sessions, k=10)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))


@pytest.mark.parametrize("weighted", [False, True])
def test_basket_totals_count_every_kept_basket_and_pairs_keep_only_pairable_ones(weighted: bool) -> None:
    rng = np.random.default_rng(5)
    baskets = rng.integers(0, 300, 4_000)
    items = rng.integers(0, 50, 4_000)
    weights = rng.random(4_000).astype(np.float32)
    table = basket_incidence(baskets, items, 50, 6, weights=weights if weighted else None)
    members: dict[int, set[int]] = {}
    weight: dict[int, float] = {}
    for b, i, w in zip(baskets.tolist(), items.tolist(), weights.tolist()):
        members.setdefault(b, set()).add(i)
        weight[b] = max(weight.get(b, 0.0), float(np.float32(w))) if weighted else 1.0
    kept = {b for b, m in members.items() if len(m) <= 6}
    assert table.n_baskets == pytest.approx(sum(weight[b] for b in kept))
    expected = np.zeros(50)
    for b in kept:
        for i in members[b]:
            expected[i] += weight[b]
    np.testing.assert_allclose(table.item_counts, expected)
    pairable = sorted(b for b in kept if len(members[b]) >= 2)
    assert table.paired.shape[0] == len(pairable)
    assert [set(row.indices.tolist()) for row in table.paired] == [members[b] for b in pairable]


def test_the_history_bit_sets_or_every_events_name_per_user_and_item() -> None:
    enc = encoded(4)
    matrix, names = interacted_items(enc)
    bit = {name: 1 << b for b, name in enumerate(names.tolist())}
    expected: dict[tuple[int, int], int] = {}
    for u, i, name in zip(enc.users.tolist(), enc.items.tolist(), enc.log.event_names.tolist()):
        expected[(u, i)] = expected.get((u, i), 0) | bit[name]
    coo = matrix.tocoo()
    assert dict(zip(zip(coo.row.tolist(), coo.col.tolist()), coo.data.tolist())) == expected


def test_content_candidates_taken_a_block_of_items_at_a_time_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.ml import content
    from app.ml.content import content_index, content_neighbours

    rng = np.random.default_rng(8)
    n = 400
    attributes = [{"brand": f"b{rng.integers(0, 60)}", "category": f"c{rng.integers(0, 3)}",
                   "tags": [f"t{t}" for t in rng.choice(12, 2, replace=False)]} for _ in range(n)]
    catalog = CatalogSnapshot.build([f"i{i:03d}" for i in range(n)], attributes=attributes)
    index = content_index(catalog, catalog.item_ids)
    allowed = rng.random(n) > 0.1
    # A budget that leaves the common tokens (categories, tags) to the rescoring: the blocked path.
    whole = content_neighbours(index, k=5, pair_budget=5_000, allowed_neighbours=allowed)
    monkeypatch.setattr(content, "CANDIDATE_BLOCK", 37)
    blocks = content_neighbours(index, k=5, pair_budget=5_000, allowed_neighbours=allowed)
    assert whole.nnz > 0
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))
    assert not any(i in row.indices for i, row in enumerate(blocks)), "never an item itself"
