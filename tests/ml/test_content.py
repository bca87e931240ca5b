import numpy as np

from app.ml.content import content_index, content_neighbours, item_tokens, tfidf_matrix, vectorise
from app.ml.interactions import CatalogSnapshot


def row_of(table, item_ids, item):
    row = table[list(item_ids).index(item)]
    return dict(zip(np.asarray(item_ids, dtype=object)[row.indices].tolist(), row.data.tolist()))


def shoe_catalog(**overrides):
    items = {
        "trail-1": {"title": "Speedcross trail running shoe", "brand": "Salomon", "category": "shoes",
                    "tags": ["trail", "running"], "price": 130},
        "road-1": {"title": "Pegasus road running shoe", "brand": "Nike", "category": "shoes",
                   "tags": ["road", "running"], "price": 120},
        "kettle": {"title": "Electric kettle", "brand": "Bosch", "category": "kitchen", "tags": ["home"]},
        "toaster": {"title": "Two slice toaster", "brand": "Bosch", "category": "kitchen", "tags": ["home"]},
        "new-trail": {"title": "Sense Ride trail running shoe", "brand": "Salomon", "category": "shoes",
                      "tags": ["trail"]},
    }
    items.update(overrides)
    return CatalogSnapshot.build(list(items), attributes=list(items.values()))


def test_a_brand_new_item_with_attributes_only_has_the_right_neighbours():
    catalog = shoe_catalog()
    table = content_neighbours(content_index(catalog, catalog.item_ids), k=10, pair_budget=10**9)
    found = row_of(table, catalog.item_ids, "new-trail")
    assert list(found)[:2] == ["trail-1", "road-1"]
    assert "kettle" not in found and "new-trail" not in found
    assert all(0 < s <= 1 for s in found.values())
    assert list(row_of(table, catalog.item_ids, "kettle")) == ["toaster"]


def test_items_missing_from_the_catalog_or_hidden_get_no_part():
    catalog = shoe_catalog()
    item_ids = np.array(list(catalog.item_ids) + ["not-in-catalog"], dtype=object)
    allowed = np.array([i != "trail-1" for i in item_ids])
    table = content_neighbours(content_index(catalog, item_ids), k=10, pair_budget=10**9, allowed_neighbours=allowed)
    assert table.shape == (6, 6)
    assert table[5].nnz == 0
    assert "trail-1" not in row_of(table, item_ids, "new-trail")


def test_tokens_are_field_qualified_lowercase_and_skip_numbers_and_long_text():
    attributes = {"title": "Blue Mug, 2-pack", "brand": "ACME", "price": 9.5, "tags": ["Gift", 3],
                  "description": "x" * 200, "in_stock": True}
    tokens = item_tokens("Product", attributes)
    assert tokens == ["item_type=product", "w:blue", "w:mug", "w:pack", "brand=acme", "tags=gift"]


def test_tfidf_rows_are_unit_length_and_single_item_tokens_drop_out():
    x, _, _ = tfidf_matrix([["a", "b", "only-here"], ["a", "c"], ["b", "c"]])
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0)
    assert x.shape[1] == 4 and x[:, 2].nnz == 0


def test_common_tokens_only_rerank_when_the_pair_budget_is_small():
    rng = np.random.default_rng(3)
    n = 300
    attributes = [{"category": f"c{i % 3}", "brand": f"b{rng.integers(30)}",
                   "title": " ".join(f"w{w}" for w in rng.integers(0, 80, 3))} for i in range(n)]
    catalog = CatalogSnapshot.build([f"i{i:03d}" for i in range(n)], attributes=attributes)
    exact = content_neighbours(content_index(catalog, catalog.item_ids), k=5, pair_budget=10**9)
    bounded = content_neighbours(content_index(catalog, catalog.item_ids), k=5, pair_budget=20_000)
    x, _, _ = tfidf_matrix([item_tokens("product", a) for a in attributes])
    cosine = (x @ x.T).toarray()
    rows = np.repeat(np.arange(n), np.diff(bounded.indptr))
    np.testing.assert_allclose(bounded.data, cosine[rows, bounded.indices], rtol=1e-5)
    same_top = np.mean([exact[i].indices[0] == bounded[i].indices[0] for i in range(n) if bounded[i].nnz])
    assert same_top > 0.9
    for table in (exact, bounded):
        assert table.diagonal().sum() == 0 and table.data.max() <= 1.0


def test_a_new_item_is_placed_in_the_trained_index_by_its_tokens():
    catalog = CatalogSnapshot.build(
        ["boot-1", "boot-2", "mug"],
        attributes=[{"category": "shoes", "brand": "Peak"}, {"category": "shoes", "brand": "Trail"},
                    {"category": "kitchen", "brand": "Peak"}],
    )
    index = content_index(catalog, catalog.item_ids)
    token_index = {t: j for j, t in enumerate(index.tokens.tolist())}
    columns, weights = vectorise(token_index, index.idf, item_tokens("product", {"category": "shoes",
                                                                                 "brand": "Never-seen"}))
    assert index.tokens[columns].tolist() == ["category=shoes"] and np.allclose(weights, [1.0])
    scores = index.matrix[:, columns] @ weights
    assert scores[0] > 0 and scores[1] > 0 and scores[2] == 0
    unknown = vectorise(token_index, index.idf, ["colour=teal"])
    assert unknown[0].size == 0
